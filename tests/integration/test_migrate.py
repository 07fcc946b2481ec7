"""`migrate` checks a table completely before it changes anything: a rejected table leaves nothing
behind; a changed `key:` moves bronze's primary key (or says why not); keys that are not unique at the
source and `query:` errors are reported against what the user wrote."""

from __future__ import annotations

import json
import time
from typing import Any

from bronzeline.warehouse import ddl
from tests.integration.pipeline import Pipeline


def bronze_tables(pipeline: Pipeline) -> set[str]:
    with pipeline.wh() as conn:
        return {str(r[0]) for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'bronze'")}


def watermark_rows(pipeline: Pipeline) -> set[str]:
    with pipeline.wh() as conn:
        return {str(r[0]) for r in conn.execute("SELECT table_name FROM dwh_control.extract_watermarks")}


def primary_key(pipeline: Pipeline, table: str) -> list[str] | None:
    with pipeline.wh() as conn:
        row = conn.execute(
            "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_constraint con "
            "CROSS JOIN unnest(con.conkey) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum "
            "WHERE con.conrelid = to_regclass(%s) AND con.contype = 'p'", (f"bronze.{table}",)).fetchone()
        return None if row is None else row[0]


def test_a_rejected_table_leaves_nothing_behind(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.things (id int PRIMARY KEY, label text, n int, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config(
        "  - {name: good, from: tracksolid.things, watermark: recorded_at, key: [id]}\n"
        "  - {name: not_a_time, from: tracksolid.things, watermark: n, key: [id]}\n"
        "  - {name: no_key, from: tracksolid.things, watermark: recorded_at, key: [serial]}\n"
        "  - {name: snap_no_key, from: tracksolid.things, mode: snapshot, key: [serial]}\n")
    proc = pipeline.cli("migrate")
    assert proc.returncode == 1 and "3 problem(s)" in proc.stderr, proc.stderr
    assert "not_a_time: watermark column 'n' is integer" in proc.stderr
    assert "no_key: key column 'serial' is not in the source's columns" in proc.stderr
    assert "snap_no_key: key column 'serial'" in proc.stderr
    assert bronze_tables(pipeline) == {"good"}
    assert watermark_rows(pipeline) == {"good"}

    # once the config is fixed, the same tables are created
    pipeline.write_config(
        "  - {name: good, from: tracksolid.things, watermark: recorded_at, key: [id]}\n"
        "  - {name: not_a_time, from: tracksolid.things, watermark: recorded_at, key: [id]}\n")
    assert "created bronze.not_a_time" in pipeline.cli("migrate", check=True).stdout
    assert watermark_rows(pipeline) == {"good", "not_a_time"}


READINGS = """
CREATE TABLE tracksolid.readings (device text, seq int, v numeric, recorded_at timestamptz NOT NULL DEFAULT now(),
                                  PRIMARY KEY (device, seq));
INSERT INTO tracksolid.readings (device, seq, v) SELECT 'a', g, g FROM generate_series(1, 5) g;
"""


def readings(key: str) -> str:
    return f"  - {{name: readings, from: tracksolid.readings, watermark: recorded_at, key: [{key}]}}\n"


def test_changing_the_key_moves_bronzes_primary_key(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(READINGS)
    pipeline.write_config(readings("seq"))  # not the source's key, but unique for now
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)
    pipeline.cli("run", check=True)
    assert primary_key(pipeline, "readings") == ["seq"]

    # the user corrects `key:` to the source's real key: migrate moves bronze's primary key
    pipeline.write_config(readings("device, seq"))
    with pipeline.wh() as conn:
        assert not ddl.bronze_key_matches(conn, "bronze", "readings", ["device", "seq"])
    proc = pipeline.cli("migrate", check=True)
    assert "bronze.readings: primary key (seq) → (device, seq)" in proc.stdout
    assert primary_key(pipeline, "readings") == ["device", "seq"]
    with pipeline.wh() as conn:
        assert ddl.bronze_key_matches(conn, "bronze", "readings", ["seq", "device"])
        assert not ddl.bronze_key_matches(conn, "bronze", "readings", ["seq"])
    assert "primary key" not in pipeline.cli("migrate", check=True).stdout  # idempotent

    # rows that share a seq with the old ones now load
    with pipeline.src() as conn:
        conn.execute("INSERT INTO tracksolid.readings (device, seq, v) SELECT 'b', g, g FROM generate_series(1, 5) g")
    time.sleep(0.15)
    assert "readings: loaded 5 of 5 rows" in pipeline.cli("run", check=True).stdout

    # a key bronze's rows violate is refused, naming the table, the key and an example; nothing changes
    pipeline.write_config(readings("device"))
    proc = pipeline.cli("migrate")
    assert proc.returncode == 1
    assert ("readings: cannot change the primary key of bronze.readings from (device, seq) to (device): 2 key "
            "value(s) appear more than once in bronze, e.g. device = ") in proc.stderr
    assert "in 5 rows" in proc.stderr
    assert primary_key(pipeline, "readings") == ["device", "seq"]


def test_a_key_that_is_not_unique_at_the_source(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        # no index: small, so migrate looks for duplicates
        conn.execute("CREATE TABLE tracksolid.plain (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.plain (id) VALUES (1), (2), (2), (3)")
        # "large" (per the planner's estimate) but with an index led by the key: the probe is cheap
        conn.execute("CREATE TABLE tracksolid.indexed (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("CREATE INDEX ON tracksolid.indexed (id, recorded_at)")
        conn.execute("INSERT INTO tracksolid.indexed (id) VALUES (7), (7), (8)")
        # large and no index: not probed, a warning
        conn.execute("CREATE TABLE tracksolid.big (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.big (id) VALUES (5), (5)")
        # a unique index on part of the key proves the key unique: nothing to probe
        conn.execute("CREATE TABLE tracksolid.proven (id int UNIQUE, day date, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("UPDATE pg_class SET reltuples = 5e7 WHERE oid IN "
                     "('tracksolid.indexed'::regclass, 'tracksolid.big'::regclass)")
    pipeline.write_config(
        "  - {name: plain, from: tracksolid.plain, watermark: recorded_at, key: [id]}\n"
        "  - {name: indexed, from: tracksolid.indexed, watermark: recorded_at, key: [id]}\n"
        "  - {name: big, from: tracksolid.big, watermark: recorded_at, key: [id]}\n"
        "  - {name: proven, from: tracksolid.proven, watermark: recorded_at, key: [id, day]}\n"
        "  - {name: queried, query: 'SELECT id, recorded_at FROM tracksolid.proven', watermark: recorded_at, "
        "key: [id]}\n")
    proc = pipeline.cli("migrate")
    assert proc.returncode == 1 and "2 problem(s)" in proc.stderr, proc.stderr
    assert "plain: key (id) is not unique at the source: id = 2 appears 2 times in tracksolid.plain" in proc.stderr
    assert "indexed: key (id) is not unique at the source: id = 7 appears 2 times" in proc.stderr
    assert "warning: big: no unique index on key (id) at tracksolid.big" in proc.stderr
    assert "warning: queried: key (id) of a `query:` table cannot be checked by migrate" in proc.stderr
    assert "proven" not in proc.stderr
    assert bronze_tables(pipeline) == {"big", "proven", "queried"}


def test_a_query_error_points_into_the_users_query(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.t (id int PRIMARY KEY, x text, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config(
        "  - {name: typo, query: 'SELEC id, x FROM tracksolid.t', watermark: recorded_at, key: [id]}\n"
        "  - name: second_line\n"
        "    query: |\n"
        "      SELECT id, x, recorded_at\n"
        "      FROM tracksolid.t WHERE nope > 1\n"
        "    watermark: recorded_at\n"
        "    key: [id]\n")
    proc = pipeline.cli("migrate")
    assert proc.returncode == 1, proc.stderr
    assert ("typo: the `query:` is not valid at source 'source' at line 1, column 1 of query "
            "('SELEC id, x FROM tracksolid.t'): syntax error at or near \"SELEC\"") in proc.stderr
    assert "second_line: the `query:` is not valid at source 'source' at line 2, column 25 of query" in proc.stderr
    assert 'column "nope" does not exist' in proc.stderr
    assert 'near ","' not in proc.stderr
    drift = pipeline.cli("drift", "--json")
    messages = {t["table"]: t["message"] for t in json.loads(drift.stdout)["tables"]}
    assert "line 1, column 1 of query" in messages["typo"]


def test_drift_suggests_sql_that_runs_for_mixed_case_columns(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute('CREATE TABLE tracksolid.cars (id int PRIMARY KEY, "Speed" numeric(5,2), '
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute('INSERT INTO tracksolid.cars (id, "Speed") VALUES (1, 12.5)')
    pipeline.write_config("  - {name: cars, from: tracksolid.cars, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    with pipeline.src() as conn:
        conn.execute('ALTER TABLE tracksolid.cars ALTER COLUMN "Speed" TYPE numeric(7,2)')
    proc = pipeline.cli("drift", "--json")
    assert proc.returncode == 1
    change: dict[str, Any] = json.loads(proc.stdout)["tables"][0]["changes"][0]
    assert (change["kind"], change["column"]) == ("typmod", "Speed")
    statement = change["action"].split("safe to follow: ")[1]
    assert statement == 'ALTER TABLE "bronze"."cars" ALTER COLUMN "Speed" TYPE numeric(7,2)'
    with pipeline.wh() as conn:
        conn.execute(statement)  # what drift suggests runs as written
    assert pipeline.cli("drift").returncode == 0
