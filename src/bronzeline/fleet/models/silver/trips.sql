-- One row per trip. Bronze already carries kilometres (the vendor sends metres); the fleet's day is
-- East African time, whatever the server's time zone.
SELECT t.id AS trip_id,
       t.imei,
       v.vehicle_number,
       v.vehicle_name,
       v.driver_name,
       v.city,
       v.cost_centre,
       t.start_time,
       t.end_time,
       (t.start_time AT TIME ZONE 'Africa/Nairobi')::date AS trip_day,
       t.distance_km,
       t.driving_seconds,
       make_interval(secs => coalesce(t.driving_seconds, 0)) AS driving_time,
       extract(epoch FROM t.end_time - t.start_time)::integer AS duration_seconds,
       t.avg_speed AS avg_speed_kmh,
       t.max_speed AS max_speed_kmh,
       t.recorded_at
FROM bronze.trips t
LEFT JOIN silver.vehicles v ON v.imei = t.imei
