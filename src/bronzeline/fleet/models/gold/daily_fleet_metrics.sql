-- Per vehicle and fleet day (East African time): km, driving time, trips, alarms, top speed, first
-- and last fix. Incremental: the (vehicle, day) pairs that got a row in the build's window are
-- aggregated again in full, and those rows replace the ones already published.
WITH bounds AS (
    SELECT current_setting('bronzeline.window_start')::timestamptz AS lo,
           current_setting('bronzeline.window_end')::timestamptz AS hi
),
touched AS (
    SELECT p.imei, (p.gps_time AT TIME ZONE 'Africa/Nairobi')::date AS day
    FROM bronze.position_history p, bounds b
    WHERE p.recorded_at > b.lo AND p.recorded_at <= b.hi
    UNION
    SELECT t.imei, (t.start_time AT TIME ZONE 'Africa/Nairobi')::date
    FROM bronze.trips t, bounds b
    WHERE t.recorded_at > b.lo AND t.recorded_at <= b.hi
    UNION
    SELECT a.imei, (a.alarm_time AT TIME ZONE 'Africa/Nairobi')::date
    FROM bronze.alarms a, bounds b
    WHERE a.recorded_at > b.lo AND a.recorded_at <= b.hi
),
trips AS (
    SELECT t.imei, t.trip_day AS day, sum(t.distance_km) AS km, sum(t.driving_seconds) AS driving_seconds,
           count(*) AS trips, max(t.recorded_at) AS recorded_at
    FROM silver.trips t
    JOIN touched USING (imei)
    WHERE t.trip_day = touched.day
    GROUP BY 1, 2
),
alarms AS (
    SELECT a.imei, touched.day, count(*) AS alarms, max(a.recorded_at) AS recorded_at
    FROM bronze.alarms a
    JOIN touched USING (imei)
    WHERE a.alarm_time >= touched.day::timestamp AT TIME ZONE 'Africa/Nairobi'
      AND a.alarm_time < (touched.day + 1)::timestamp AT TIME ZONE 'Africa/Nairobi'
    GROUP BY 1, 2
),
fixes AS (
    SELECT p.imei, touched.day, count(*) AS fixes,
           max(p.speed_kmh) FILTER (WHERE NOT p.impossible_speed AND NOT p.bad_coordinates) AS max_speed_kmh,
           min(p.gps_time) AS first_fix, max(p.gps_time) AS last_fix, max(p.recorded_at) AS recorded_at
    FROM silver.positions p
    JOIN touched USING (imei)
    WHERE p.gps_time >= touched.day::timestamp AT TIME ZONE 'Africa/Nairobi'
      AND p.gps_time < (touched.day + 1)::timestamp AT TIME ZONE 'Africa/Nairobi'
    GROUP BY 1, 2
)
SELECT touched.imei,
       touched.day,
       v.vehicle_number,
       v.vehicle_name,
       v.city,
       coalesce(trips.km, 0)::numeric(12,3) AS km,
       coalesce(trips.driving_seconds, 0)::bigint AS driving_seconds,
       coalesce(trips.trips, 0)::integer AS trips,
       coalesce(alarms.alarms, 0)::integer AS alarms,
       fixes.max_speed_kmh,
       coalesce(fixes.fixes, 0)::integer AS fixes,
       fixes.first_fix,
       fixes.last_fix,
       greatest(trips.recorded_at, alarms.recorded_at, fixes.recorded_at) AS recorded_at
FROM touched
LEFT JOIN trips USING (imei, day)
LEFT JOIN alarms USING (imei, day)
LEFT JOIN fixes USING (imei, day)
LEFT JOIN silver.vehicles v ON v.imei = touched.imei
