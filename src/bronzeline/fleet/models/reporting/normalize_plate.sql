-- A number plate as typed by anyone ('kdk-829a', ' KDK 829A ') in one comparable form: KDK829A.
CREATE OR REPLACE FUNCTION reporting.normalize_plate(plate text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT nullif(upper(regexp_replace(plate, '[^A-Za-z0-9]', '', 'g')), '')
$$;
