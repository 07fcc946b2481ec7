"""`migrate` checks what `mode: cdc` tables need at the source and prints the exact statement a DBA runs:
the publication (created, or the tables added), REPLICATION for the login, a replica identity that
matches `key:`. A rejected cdc table leaves nothing behind; once fixed, migrate passes."""

from __future__ import annotations

import uuid

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.cli import Result, invoke
from tests.integration.pipeline import Pipeline
from tests.integration.test_migrate import bronze_tables

SOURCE = """
CREATE TABLE tracksolid.devices (id int PRIMARY KEY, plate text);
CREATE TABLE tracksolid."Trips" (trip_id bigint PRIMARY KEY, device_id int, km numeric);
CREATE TABLE tracksolid.positions (id bigint PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now());
"""

TABLES = """\
  - {name: devices, from: tracksolid.devices, mode: cdc, key: [id]}
  - {name: trips, from: tracksolid.Trips, mode: cdc, key: [trip_id]}
  - {name: positions, from: tracksolid.positions, watermark: recorded_at, key: [id]}
"""


def cli(pipeline: Pipeline, *args: str, check: bool = False) -> Result:
    """`bronzeline -c CONFIG ARGS` in process."""
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), *args, env=pipeline.environ())
    assert not check or proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def cdc_config(pipeline: Pipeline, tables: str) -> None:
    """A slot name of the test's own: slots are cluster-wide, and other tests' may be there."""
    pipeline.write_config(tables, f"cdc: {{slot: bl_test_{uuid.uuid4().hex[:12]}}}\n")


def login(pipeline: Pipeline) -> str:
    return str(conninfo_to_dict(pipeline.source_dsn)["user"])


def grant_replication(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(login(pipeline))))


def test_missing_publication_and_replication_are_printed_as_statements(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(SOURCE)
    cdc_config(pipeline, TABLES)
    proc = cli(pipeline, "migrate")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # every problem at once, each with the exact statement (identifiers quoted only where needed)
    assert "CREATE PUBLICATION bronzeline_fleet FOR TABLE tracksolid.devices, tracksolid.\"Trips\";" in proc.stderr
    assert f"ALTER ROLE {login(pipeline)} REPLICATION;" in proc.stderr
    assert "2 problem(s)" in proc.stderr, proc.stderr
    # the cdc tables are left alone; the incremental table is not held back by them
    assert bronze_tables(pipeline) == {"positions"}

    with pipeline.src() as conn:
        conn.execute('CREATE PUBLICATION bronzeline_fleet FOR TABLE tracksolid.devices, tracksolid."Trips"')
    proc = cli(pipeline, "migrate")
    assert proc.returncode == 1 and "1 problem(s)" in proc.stderr and "REPLICATION;" in proc.stderr, proc.stderr
    assert bronze_tables(pipeline) == {"positions"}

    grant_replication(pipeline)
    proc = cli(pipeline, "migrate", check=True)
    assert "created bronze.devices" in proc.stdout and "created bronze.trips" in proc.stdout
    assert bronze_tables(pipeline) == {"positions", "devices", "trips"}
    with pipeline.wh() as conn:  # bronze keeps the source's key, as for any table
        keys = conn.execute("SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'p' "
                            "AND connamespace = 'bronze'::regnamespace ORDER BY 1").fetchall()
    assert [k[0] for k in keys] == ["bronze.devices", "bronze.positions", "bronze.trips"]


IDENTITY = """
CREATE TABLE tracksolid.devices (id int PRIMARY KEY, plate text);
CREATE TABLE tracksolid.events (id int, kind text);
CREATE TABLE tracksolid.readings (device text, seq int, v numeric, PRIMARY KEY (device, seq));
CREATE TABLE tracksolid.sims (id int PRIMARY KEY, iccid text NOT NULL);
CREATE UNIQUE INDEX sims_iccid ON tracksolid.sims (iccid);
ALTER TABLE tracksolid.sims REPLICA IDENTITY USING INDEX sims_iccid;
CREATE PUBLICATION bronzeline_fleet FOR TABLE tracksolid.devices, tracksolid.readings, tracksolid.sims;
"""

IDENTITY_TABLES = """\
  - {name: devices, from: tracksolid.devices, mode: cdc, key: [id]}
  - {name: events, from: tracksolid.events, mode: cdc, key: [id]}
  - {name: readings, from: tracksolid.readings, mode: cdc, key: [seq]}
  - {name: sims, from: tracksolid.sims, mode: cdc, key: [id]}
"""


def test_keyless_and_wrongly_keyed_tables_are_refused_with_the_fix(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(IDENTITY)
    grant_replication(pipeline)
    cdc_config(pipeline, IDENTITY_TABLES)
    proc = cli(pipeline, "migrate")
    assert proc.returncode == 1 and "3 problem(s)" in proc.stderr, proc.stderr
    assert ("events: tracksolid.events has no primary key or replica identity" in proc.stderr
            and "ALTER TABLE tracksolid.events REPLICA IDENTITY FULL;" in proc.stderr
            and "ALTER TABLE tracksolid.events ADD PRIMARY KEY (id);" in proc.stderr)
    # a keyless table is not offered to the publication: UPDATE and DELETE would fail at the source
    assert "ADD TABLE tracksolid.events" not in proc.stderr
    assert ("readings: key (seq) is not the replica identity of tracksolid.readings, its primary key "
            "(device, seq); set `key: [device, seq]`") in proc.stderr
    assert "sims: key (id) is not the replica identity of tracksolid.sims, its replica identity index " \
           "sims_iccid (iccid)" in proc.stderr
    assert bronze_tables(pipeline) == {"devices"}

    # the DBA gives events an identity: now it is missing from the publication, said as one statement
    with pipeline.src() as conn:
        conn.execute("ALTER TABLE tracksolid.events REPLICA IDENTITY FULL")
    cdc_config(pipeline, IDENTITY_TABLES.replace("key: [seq]", "key: [device, seq]").replace(
        "{name: sims, from: tracksolid.sims, mode: cdc, key: [id]}",
        "{name: sims, from: tracksolid.sims, mode: cdc, key: [iccid]}"))
    proc = cli(pipeline, "migrate")
    assert proc.returncode == 1 and "1 problem(s)" in proc.stderr, proc.stderr
    assert "events: the publication bronzeline_fleet at source 'source' lacks tracksolid.events; a DBA must run " \
           "ALTER PUBLICATION bronzeline_fleet ADD TABLE tracksolid.events;" in proc.stderr
    assert bronze_tables(pipeline) == {"devices", "readings", "sims"}

    with pipeline.src() as conn:
        conn.execute("ALTER PUBLICATION bronzeline_fleet ADD TABLE tracksolid.events")
    assert "created bronze.events" in cli(pipeline, "migrate", check=True).stdout


def test_a_narrowed_publication_and_no_free_slot_are_refused(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.devices (id int PRIMARY KEY, plate text, active bool);"
                     "CREATE PUBLICATION bronzeline_fleet FOR TABLE tracksolid.devices WHERE (active) "
                     "WITH (publish = 'insert, update');")
    grant_replication(pipeline)
    cdc_config(pipeline, "  - {name: devices, from: tracksolid.devices, mode: cdc, key: [id]}\n")
    proc = cli(pipeline, "migrate")
    assert proc.returncode == 1 and "2 problem(s)" in proc.stderr, proc.stderr
    assert "does not publish delete; a DBA must run ALTER PUBLICATION bronzeline_fleet SET (publish = " \
           "'insert, update, delete, truncate');" in proc.stderr
    assert "publishes only rows WHERE active of tracksolid.devices" in proc.stderr
    assert bronze_tables(pipeline) == set()

    # with every replication slot taken, there is no room for bronzeline's (physical slots: instant, no WAL kept)
    fillers = [f"bl_filler_{uuid.uuid4().hex[:12]}" for _ in range(64)]
    with pipeline.src() as conn:
        row = conn.execute("SELECT current_setting('max_replication_slots')::int - count(*) "
                           "FROM pg_replication_slots").fetchone()
        assert row is not None and 0 < row[0] <= len(fillers)
        fillers = fillers[:row[0]]
        try:
            for name in fillers:
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (name,))
            proc = cli(pipeline, "migrate")
            assert "of max_replication_slots = " in proc.stderr and "are in use; a DBA must drop an unused slot " \
                   "or run ALTER SYSTEM SET max_replication_slots = " in proc.stderr, proc.stderr
        finally:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = ANY(%s)", (fillers,))
