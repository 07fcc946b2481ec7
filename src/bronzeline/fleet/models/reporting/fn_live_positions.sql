-- Where every unit is now, for the live map. NULL arguments mean "all". acc_status is the ignition
-- (ACC) state: 'on' / 'off', or the vendor's '1' / '0'.
CREATE OR REPLACE FUNCTION reporting.fn_live_positions(p_cost_centre text DEFAULT NULL,
                                                       p_acc_status text DEFAULT NULL)
RETURNS TABLE (
    imei text,
    vehicle_number text,
    vehicle_name text,
    driver_name text,
    city text,
    cost_centre text,
    gps_time timestamptz,
    lat double precision,
    lng double precision,
    speed_kmh real,
    heading smallint,
    acc_status text,
    minutes_since_fix numeric
)
LANGUAGE sql STABLE
AS $$
    SELECT l.imei, v.vehicle_number, v.vehicle_name, v.driver_name, v.city, v.cost_centre,
           l.gps_time, l.lat, l.lng, l.speed, l.heading,
           CASE l.ignition WHEN true THEN 'on' WHEN false THEN 'off' ELSE 'unknown' END,
           round((extract(epoch FROM now() - l.gps_time) / 60)::numeric, 1)
    FROM bronze.live_positions l
    LEFT JOIN silver.vehicles v ON v.imei = l.imei
    WHERE (p_cost_centre IS NULL OR lower(v.cost_centre) = lower(p_cost_centre))
      AND (p_acc_status IS NULL
           OR CASE lower(trim(p_acc_status)) WHEN '1' THEN 'on' WHEN '0' THEN 'off'
                                             ELSE lower(trim(p_acc_status)) END
              = CASE l.ignition WHEN true THEN 'on' WHEN false THEN 'off' ELSE 'unknown' END)
    ORDER BY v.vehicle_number, l.imei
$$;
