-- The models ledger: one row per model build, one row per check result. {control} is the control schema.
CREATE TABLE {control}.model_runs (
    build_id      bigserial PRIMARY KEY,
    model         text NOT NULL,                 -- schema.name
    materialized  text NOT NULL,
    status        text NOT NULL CHECK (status IN ('building', 'built', 'failed', 'blocked')),
    rows          bigint,
    window_start  timestamptz,                   -- incremental models: the rows merged by this build
    window_end    timestamptz,
    full_refresh  boolean NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    error_message text
);
CREATE INDEX model_runs_model_idx ON {control}.model_runs (model, build_id DESC);

CREATE TABLE {control}.check_results (
    result_id     bigserial PRIMARY KEY,
    build_id      bigint,                        -- the build it gated (NULL: `bronzeline test`, source checks)
    check_name    text NOT NULL,                 -- e.g. not_null, accepted_range
    relation      text NOT NULL,                 -- schema.name
    column_name   text,
    severity      text NOT NULL CHECK (severity IN ('error', 'warn')),
    status        text NOT NULL CHECK (status IN ('pass', 'warn', 'fail')),
    failing_rows  bigint NOT NULL,
    total_rows    bigint NOT NULL,
    sample        jsonb NOT NULL DEFAULT '[]',   -- up to 10 failing keys
    query         text NOT NULL,                 -- the query for failing rows, as run
    error_message text,                          -- the check itself could not run
    checked_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX check_results_relation_idx ON {control}.check_results (relation, result_id DESC);

-- Incremental models: the bound of the last merged window (the upstream bronze watermark).
CREATE TABLE {control}.model_watermarks (
    model         text PRIMARY KEY,
    built_through timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW {control}.v_model_status AS
SELECT DISTINCT ON (model) model, materialized, status, rows, started_at, finished_at, error_message,
       (SELECT max(finished_at) FROM {control}.model_runs b WHERE b.model = r.model AND b.status = 'built')
           AS last_built_at
FROM {control}.model_runs r
ORDER BY model, build_id DESC;
