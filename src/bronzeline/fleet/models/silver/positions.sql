-- Every fix once: a unit's fix reported twice (the 60-s poll and the 30-min track_list) keeps its
-- latest report. Impossible speeds and coordinates are flagged, not dropped, so they can be counted.
-- Incremental: the window is read here (not only filtered on the output) so that only the window's
-- rows are de-duplicated; outside a build it defaults to everything.
SELECT DISTINCT ON (p.imei, p.gps_time)
       p.id AS position_id,
       p.imei,
       p.gps_time,
       p.recorded_at,
       p.lat,
       p.lng,
       p.speed AS speed_kmh,
       p.heading,
       p.ignition,
       p.source,
       coalesce(p.speed < 0 OR p.speed > 250, false) AS impossible_speed,
       (p.lat NOT BETWEEN -90 AND 90 OR p.lng NOT BETWEEN -180 AND 180
        OR (p.lat = 0 AND p.lng = 0)) AS bad_coordinates
FROM bronze.position_history p
WHERE p.recorded_at > coalesce(nullif(current_setting('bronzeline.window_start', true), ''), '-infinity')::timestamptz
  AND p.recorded_at <= coalesce(nullif(current_setting('bronzeline.window_end', true), ''), 'infinity')::timestamptz
ORDER BY p.imei, p.gps_time, p.recorded_at DESC, p.id DESC
