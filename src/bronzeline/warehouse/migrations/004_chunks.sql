-- Chunked first loads: one plan per load (its upper bound, chosen once for every chunk) and one row
-- per chunk (its key range and whether it is loaded). {control} is the control schema.
CREATE TABLE {control}.chunk_plans (
    plan_id           bigserial PRIMARY KEY,
    table_name        text NOT NULL,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'superseded')),
    upper_bound       timestamptz NOT NULL,      -- every chunk reads (none, upper_bound]
    source_clock      timestamptz,
    oldest_xact_start timestamptz,
    holdback_seconds  double precision,
    key_columns       text[] NOT NULL,
    chunk_count       integer NOT NULL CHECK (chunk_count >= 1),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz
);
-- At most one open plan per table.
CREATE UNIQUE INDEX chunk_plans_open_idx ON {control}.chunk_plans (table_name) WHERE status = 'open';

CREATE TABLE {control}.chunk_ranges (
    plan_id     bigint NOT NULL REFERENCES {control}.chunk_plans ON DELETE CASCADE,
    chunk       integer NOT NULL CHECK (chunk >= 1),   -- 1-based
    key_low     text[],                                -- exclusive; NULL: from the smallest key
    key_high    text[],                                -- inclusive; NULL: to the largest key
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'loaded')),
    run_id      bigint,                                -- the run that loaded it (or the latest one)
    run_ids     bigint[] NOT NULL DEFAULT ARRAY[]::bigint[],  -- every run of this chunk (for its leftovers)
    rows_loaded bigint,
    loaded_at   timestamptz,
    PRIMARY KEY (plan_id, chunk)
);
