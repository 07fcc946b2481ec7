-- Trips for the map, filtered the way the dashboard filters: plates (any spelling), driver (a part of
-- the name), cost centre, city, and a time range the trips overlap. NULL arguments mean "all".
CREATE OR REPLACE FUNCTION reporting.fn_trips_for_map(p_vehicles text[] DEFAULT NULL,
                                                      p_driver text DEFAULT NULL,
                                                      p_cost_centre text DEFAULT NULL,
                                                      p_city text DEFAULT NULL,
                                                      p_start timestamptz DEFAULT NULL,
                                                      p_end timestamptz DEFAULT NULL)
RETURNS TABLE (
    trip_id bigint,
    imei text,
    vehicle_number text,
    vehicle_name text,
    driver_name text,
    city text,
    cost_centre text,
    start_time timestamptz,
    end_time timestamptz,
    distance_km numeric,
    driving_seconds integer,
    max_speed_kmh numeric,
    start_lat double precision,
    start_lng double precision,
    end_lat double precision,
    end_lng double precision
)
LANGUAGE sql STABLE
AS $$
    SELECT t.trip_id, t.imei, t.vehicle_number, t.vehicle_name, t.driver_name, t.city, t.cost_centre,
           t.start_time, t.end_time, t.distance_km, t.driving_seconds, t.max_speed_kmh,
           t.start_lat, t.start_lng, t.end_lat, t.end_lng
    FROM reporting.v_trips t
    WHERE (p_vehicles IS NULL
           OR reporting.normalize_plate(t.vehicle_number)
              = ANY (SELECT reporting.normalize_plate(x) FROM unnest(p_vehicles) x))
      AND (p_driver IS NULL OR t.driver_name ILIKE '%' || p_driver || '%')
      AND (p_cost_centre IS NULL OR lower(t.cost_centre) = lower(p_cost_centre))
      AND (p_city IS NULL OR lower(t.city) = lower(p_city))
      AND (p_start IS NULL OR t.end_time >= p_start)
      AND (p_end IS NULL OR t.start_time < p_end)
    ORDER BY t.start_time, t.trip_id
$$;
