-- Trips as the dashboard's map shows them: with where each trip started and ended (the unit's first
-- usable fix inside the trip, and its last). Plain lat/lng, so it needs no PostGIS.
SELECT t.trip_id,
       t.imei,
       t.vehicle_number,
       t.vehicle_name,
       t.driver_name,
       t.city,
       t.cost_centre,
       t.trip_day,
       t.start_time,
       t.end_time,
       t.distance_km,
       t.driving_seconds,
       t.duration_seconds,
       t.avg_speed_kmh,
       t.max_speed_kmh,
       s.lat AS start_lat,
       s.lng AS start_lng,
       e.lat AS end_lat,
       e.lng AS end_lng
FROM silver.trips t
LEFT JOIN LATERAL (
    SELECT p.lat, p.lng FROM silver.positions p
    WHERE p.imei = t.imei AND p.gps_time >= t.start_time AND p.gps_time <= t.end_time
      AND NOT p.bad_coordinates
    ORDER BY p.gps_time LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT p.lat, p.lng FROM silver.positions p
    WHERE p.imei = t.imei AND p.gps_time >= t.start_time AND p.gps_time <= t.end_time
      AND NOT p.bad_coordinates
    ORDER BY p.gps_time DESC LIMIT 1
) e ON true
