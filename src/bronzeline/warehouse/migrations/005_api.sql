-- API and push sources: the access tokens the API client caches (never shown; not granted to the
-- read-only role), the log of every call it makes, and records a load could not map. {control} is the
-- control schema.
CREATE TABLE {control}.api_tokens (
    connection    text NOT NULL,
    account       text NOT NULL,
    access_token  text NOT NULL,
    refresh_token text NOT NULL,
    expires_at    timestamptz NOT NULL,
    obtained_at   timestamptz NOT NULL,
    PRIMARY KEY (connection, account)
);

CREATE TABLE {control}.api_calls (
    call_id     bigserial PRIMARY KEY,
    called_at   timestamptz NOT NULL,
    connection  text NOT NULL,
    method      text NOT NULL,
    target      text,
    imeis       integer NOT NULL DEFAULT 0,
    code        integer,                 -- the platform's code, 0 = success; NULL: no answer was read
    message     text,
    http_status integer,
    duration_ms double precision NOT NULL,
    rows        integer NOT NULL DEFAULT 0,
    table_name  text,
    run_id      bigint,
    retry       integer NOT NULL DEFAULT 0
);
CREATE INDEX api_calls_called_at_idx ON {control}.api_calls (called_at);
CREATE INDEX api_calls_run_idx ON {control}.api_calls (run_id);

-- Records of an API or push batch that could not be parsed or mapped: kept in <name>_raw with their
-- error, counted here; for a loaded run rows_extracted = rows_loaded + rows_skipped still holds over the
-- records that mapped.
ALTER TABLE {control}.extract_runs ADD COLUMN rows_invalid bigint NOT NULL DEFAULT 0;

-- Calls per connection and day, as the status page and `status` show them.
CREATE VIEW {control}.v_api_calls_daily AS
SELECT connection, date_trunc('day', called_at) AS day, count(*) AS calls,
       count(*) FILTER (WHERE code IS DISTINCT FROM 0) AS failures,
       count(*) FILTER (WHERE code = 1006) AS rate_limited,
       sum(rows) AS rows, round(avg(duration_ms)::numeric, 1) AS avg_ms
FROM {control}.api_calls GROUP BY 1, 2;
