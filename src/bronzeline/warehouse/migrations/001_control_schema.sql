-- Control tables: watermarks and the run ledger. {control} is the control schema.
CREATE TABLE {control}.extract_watermarks (
    table_name           text PRIMARY KEY,
    last_extracted_at    timestamptz,
    last_loaded_at       timestamptz,
    rows_loaded_last_run bigint,
    last_run_id          bigint,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {control}.extract_runs (
    run_id            bigserial PRIMARY KEY,
    table_name        text NOT NULL,
    mode              text NOT NULL,
    status            text NOT NULL CHECK (status IN ('extracting', 'uploaded', 'loaded', 'failed')),
    window_start      timestamptz,
    window_end        timestamptz,
    source_clock      timestamptz,
    oldest_xact_start timestamptz,
    holdback_seconds  double precision,
    run_started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    uploaded_at       timestamptz,
    run_finished_at   timestamptz,
    rows_extracted    bigint,
    rows_loaded       bigint,
    rows_skipped      bigint,
    rows_deleted      bigint,
    csv_path          text,
    bytes             bigint,
    checksum          text,
    attempts          integer NOT NULL DEFAULT 1,
    error_message     text,
    -- Every loaded run accounts for every row it extracted.
    CONSTRAINT extract_runs_accounted CHECK (
        status <> 'loaded' OR rows_extracted = rows_loaded + rows_skipped)
);
CREATE INDEX extract_runs_table_idx ON {control}.extract_runs (table_name, run_id DESC);
CREATE INDEX extract_runs_status_idx ON {control}.extract_runs (status, run_started_at);

CREATE VIEW {control}.v_table_freshness AS
SELECT r.table_name,
       max(r.run_finished_at) FILTER (WHERE r.status = 'loaded') AS last_loaded_at,
       extract(epoch FROM now() - max(r.run_finished_at) FILTER (WHERE r.status = 'loaded'))
           AS seconds_since_load,
       (array_agg(r.status ORDER BY r.run_id DESC))[1] AS last_status,
       max(r.run_id) AS last_run_id,
       w.last_extracted_at AS watermark
FROM {control}.extract_runs r
LEFT JOIN {control}.extract_watermarks w USING (table_name)
GROUP BY r.table_name, w.last_extracted_at;

CREATE VIEW {control}.v_recent_failures AS
SELECT run_id, table_name, run_started_at, run_finished_at, window_start, window_end,
       attempts, error_message
FROM {control}.extract_runs
WHERE status = 'failed' AND run_started_at > now() - interval '7 days'
ORDER BY run_id DESC;

CREATE VIEW {control}.v_watermark_lag AS
SELECT table_name, last_extracted_at, last_loaded_at, rows_loaded_last_run,
       extract(epoch FROM now() - last_extracted_at) AS lag_seconds
FROM {control}.extract_watermarks;
