-- One vehicle's trail over the last `p_hours` hours (usable fixes only, oldest first). The vehicle is
-- found by its plate, however it is typed.
CREATE OR REPLACE FUNCTION reporting.fn_vehicle_track(p_vehicle_number text, p_hours numeric DEFAULT 24)
RETURNS TABLE (
    imei text,
    vehicle_number text,
    gps_time timestamptz,
    lat double precision,
    lng double precision,
    speed_kmh real,
    heading smallint,
    ignition boolean
)
LANGUAGE sql STABLE
AS $$
    SELECT p.imei, v.vehicle_number, p.gps_time, p.lat, p.lng, p.speed_kmh, p.heading, p.ignition
    FROM silver.vehicles v
    JOIN silver.positions p ON p.imei = v.imei
    WHERE reporting.normalize_plate(v.vehicle_number) = reporting.normalize_plate(p_vehicle_number)
      AND p.gps_time >= now() - make_interval(secs => p_hours * 3600)
      AND NOT p.bad_coordinates
    ORDER BY p.gps_time, p.imei
$$;
