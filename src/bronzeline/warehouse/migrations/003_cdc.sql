-- Change data capture: where each slot's changes are applied up to, and where each cdc table joined its slot.
-- {control} is the control schema.
CREATE TABLE {control}.cdc_slots (
    slot_name        text PRIMARY KEY,
    source           text NOT NULL,                 -- the connection name
    applied_lsn      pg_lsn,                        -- commit LSN of the last applied transaction
    applied_at       timestamptz,                   -- when the warehouse committed it
    source_commit_at timestamptz,                   -- when the source committed it
    heartbeat_at     timestamptz,                   -- last heartbeat sent while the slot was idle
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {control}.cdc_tables (
    table_name    text PRIMARY KEY,
    slot_name     text NOT NULL,
    start_lsn     pg_lsn NOT NULL,                  -- changes committed at or below it are in the snapshot
    snapshot_at   timestamptz NOT NULL DEFAULT now(),
    snapshot_run  bigint,                           -- the run that loaded the snapshot
    state         text NOT NULL DEFAULT 'streaming' CHECK (state IN ('streaming', 'stopped', 'lost')),
    error_message text,                             -- why it stopped
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- cdc run rows: the commit LSNs a change batch covers; `note` says what a resync replaced.
ALTER TABLE {control}.extract_runs ADD COLUMN lsn_start pg_lsn, ADD COLUMN lsn_end pg_lsn, ADD COLUMN note text;
