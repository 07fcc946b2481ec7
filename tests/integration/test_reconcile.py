"""`bronzeline reconcile`: deletes, same-watermark updates and late rows on an incremental table are
found by key range and repaired through an ordinary ledgered batch; equal values of awkward types
never differ; the repair holds the table's lock and survives a kill like any batch."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.reconcile import Options, reconcile_table
from tests.cli import Result, invoke
from tests.integration.pipeline import Pipeline

POSITIONS = """
CREATE TABLE tracksolid.positions (
    id bigint PRIMARY KEY,
    imei text NOT NULL,
    recorded_at timestamptz NOT NULL,
    speed numeric(5,2),
    note text,
    geom geometry(Point, 4326));
"""

TABLE = """\
  - name: positions
    from: tracksolid.positions
    mode: incremental
    watermark: recorded_at
    key: [id]
    geometry: [geom]
"""

SMALL = ("--range-rows", "40", "--leaf-rows", "8")  # many ranges and splits on a few hundred rows


def reconcile(pipeline: Pipeline, *args: str) -> Result:
    return invoke(pipeline.tmp, "-c", str(pipeline.config_path), "reconcile", *args, env=pipeline.environ())


def keys(found: dict[str, Any]) -> list[int]:
    return [int(k["id"]) for k in found["keys"]]


def rows_up_to_watermark(conn: psycopg.Connection[Any], relation: sql.Composable, watermark: Any) -> list[Any]:
    """Every row (as text, geometry as hex EWKB) with recorded_at <= the watermark, by key (but id 200,
    moved past the watermark at the source: the next run's)."""
    return conn.execute(sql.SQL("SELECT id, imei, recorded_at, speed::text, note, encode(ST_AsEWKB(geom), 'hex') "
                                "FROM {} WHERE recorded_at <= %s AND id <> 200 ORDER BY id").format(relation),
                        (watermark,)).fetchall()


def loaded_positions(pipeline: Pipeline, rows: int = 300) -> None:
    with pipeline.src() as conn:
        conn.execute(POSITIONS)
        conn.execute("""INSERT INTO tracksolid.positions
            SELECT g, 'imei-' || (g %% 7), now() - interval '1 hour' + g * interval '1 second', g %% 100 + 0.5,
                   CASE WHEN g %% 3 = 0 THEN NULL WHEN g %% 3 = 1 THEN '' ELSE 'a "quoted", text' END,
                   ST_SetSRID(ST_MakePoint(36.8 + g * 1e-7, -1.28), 4326)
            FROM generate_series(1, %s) g""", (rows,))
    pipeline.write_config(TABLE)
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)
    [outcome] = pipeline.run("positions")
    assert outcome.status == "loaded" and outcome.rows_loaded == rows


def test_reconcile_finds_deletes_updates_and_late_rows_then_repairs_them(pipeline: Pipeline) -> None:
    loaded_positions(pipeline)
    with pipeline.src() as conn:
        conn.execute("DELETE FROM tracksolid.positions WHERE id IN (5, 100, 250)")
        # same watermark: a normal run never sees these
        conn.execute("UPDATE tracksolid.positions SET speed = 99.99 WHERE id = 7")
        conn.execute("UPDATE tracksolid.positions SET note = NULL WHERE id = 44")  # '' -> NULL
        conn.execute("UPDATE tracksolid.positions SET geom = ST_SetSRID(ST_MakePoint(1, 2), 4326) WHERE id = 300")
        # committed late with an old watermark: below the watermark, never extracted
        conn.execute("INSERT INTO tracksolid.positions VALUES (5000, 'late', now() - interval '2 hours', 1, 'x', NULL)")
        # past the watermark: the next run's job, not a difference
        conn.execute("INSERT INTO tracksolid.positions VALUES (6000, 'new', now() + interval '1 hour', 1, 'y', NULL)")
        conn.execute("UPDATE tracksolid.positions SET recorded_at = now() + interval '1 hour' WHERE id = 200")

    found = reconcile(pipeline, "positions", "--json", *SMALL)
    assert found.returncode == 1, found.stderr
    [report] = json.loads(found.stdout)["tables"]
    assert keys(report["missing"]) == [5000]
    assert keys(report["extra"]) == [5, 100, 250]
    assert keys(report["changed"]) == [7, 44, 300]
    assert report["beyond_watermark"] == 1  # id 200 moved past the watermark: left to the next run
    assert report["ok"] is False and report["differences"] == 7 and report["repair"] is None
    assert report["missing"]["capped"] is False and report["ranges"] > 8
    assert (report["source_rows"], report["bronze_rows"]) == (300 - 3 + 1 - 1, 300)

    text = reconcile(pipeline, "positions", *SMALL)
    assert text.returncode == 1
    assert "1 missing, 3 extra, 3 changed" in text.stdout
    assert "extra: id = 5; id = 100; id = 250" in text.stdout

    processed_before = pipeline.files("processed", "positions")
    fixed = reconcile(pipeline, "positions", "--repair", *SMALL)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "loaded 4 of 4 rows (0 already present), 3 deleted" in fixed.stdout
    new_files = sorted(set(pipeline.files("processed", "positions")) - set(processed_before))
    assert len(new_files) == 2 and new_files[1].endswith(".manifest.json")
    assert pipeline.files("exports", "positions") == []
    with pipeline.wh() as wh:
        run = wh.execute("SELECT status, mode, rows_extracted, rows_loaded, rows_skipped, rows_deleted, csv_path "
                         "FROM dwh_control.extract_runs ORDER BY run_id DESC LIMIT 1").fetchone()
        watermark = wh.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks "
                               "WHERE table_name = 'positions'").fetchone()[0]
    assert run is not None and run[:6] == ("loaded", "reconcile", 4, 4, 0, 3)
    assert new_files[0] in run[6]

    with pipeline.src() as s, pipeline.wh() as w:
        at_source = rows_up_to_watermark(s, sql.Identifier("tracksolid", "positions"), watermark)
        in_bronze = rows_up_to_watermark(w, sql.Identifier("bronze", "positions"), watermark)
    assert at_source == in_bronze and len(at_source) == 297

    again = reconcile(pipeline, "positions", *SMALL)
    assert again.returncode == 0, again.stdout
    assert "source and bronze agree" in again.stdout


AWKWARD = """
CREATE TYPE tracksolid.kind AS ENUM ('zulu', 'alpha', 'mike');
CREATE TABLE tracksolid.readings (
    kind tracksolid.kind NOT NULL,
    imei text NOT NULL,
    day date NOT NULL,
    at timestamptz, local_at timestamp, amount numeric(12,4), ratio double precision, r4 real,
    doc jsonb, raw json, tags text[], kinds tracksolid.kind[], blob bytea, span interval,
    geom geometry(Point, 4326), route geometry(LineString, 32737),
    PRIMARY KEY (kind, imei, day));
INSERT INTO tracksolid.readings
SELECT (ARRAY['zulu', 'alpha', 'mike'])[1 + g % 3]::tracksolid.kind, 'imei ' || (g % 11) || CASE WHEN g % 4 = 0
       THEN ' Ünï "q"' ELSE '' END, date '2024-01-01' + g,
       '2024-03-10 02:30:00.123456+05:45'::timestamptz + g * interval '1 minute', '2024-02-29 12:00:00.000001',
       g / 7.0, 1.0 / (g + 3), 0.1 * g, jsonb_build_object('g', g, 'nested', jsonb_build_array(1, 2.50, 'é')),
       '{"b": 1,  "a": [2, 1]}', ARRAY['a,b', NULL, '', 'q"uote'], ARRAY['mike', 'zulu']::tracksolid.kind[],
       '\\x00ff'::bytea, g * interval '1 day 1 second',
       ST_SetSRID(ST_MakePoint(36.821946 + g * 1e-9, -1.292066), 4326),
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'SRID=32737;LINESTRING(257000.123456789 9857000.987654321,257100 9857100)'
       END::geometry
FROM generate_series(1, 150) g;
"""


def test_awkward_types_and_a_composite_enum_key_compare_equal(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(AWKWARD)
    pipeline.write_config("""\
  - name: readings
    from: tracksolid.readings
    mode: snapshot
    key: [kind, imei, day]
    geometry: [geom, route]
  - name: readings_wkt
    from: tracksolid.readings
    mode: snapshot
    key: [kind, imei, day]
    geometry_format: ewkt
""")
    pipeline.cli("migrate", check=True)
    assert all(o.status == "loaded" for o in pipeline.run())

    same = reconcile(pipeline, "readings", "readings_wkt", "--json", "--range-rows", "10", "--leaf-rows", "3")
    assert same.returncode == 0, same.stdout + same.stderr
    reports = json.loads(same.stdout)["tables"]
    assert [(r["table"], r["differences"], r["source_rows"], r["bronze_rows"]) for r in reports] == [
        ("readings", 0, 150, 150), ("readings_wkt", 0, 150, 150)]

    with pipeline.src() as conn:
        conn.execute("UPDATE tracksolid.readings SET doc = doc || '{\"g\": 0}' "
                     "WHERE imei = 'imei 1' AND day = '2024-01-02'")
        conn.execute("DELETE FROM tracksolid.readings WHERE imei = 'imei 2' AND day = '2024-01-03'")
    differ = reconcile(pipeline, "readings", "--json", "--range-rows", "10", "--leaf-rows", "3")
    [report] = json.loads(differ.stdout)["tables"]
    assert differ.returncode == 1
    assert report["changed"]["keys"] == [{"kind": "alpha", "imei": "imei 1", "day": "2024-01-02"}]
    assert report["extra"]["keys"] == [{"kind": "mike", "imei": "imei 2", "day": "2024-01-03"}]
    assert report["missing"]["count"] == 0

    assert reconcile(pipeline, "readings", "--repair").returncode == 0
    assert reconcile(pipeline, "readings").returncode == 0


def test_a_run_during_a_repair_skips_the_table(pipeline: Pipeline) -> None:
    loaded_positions(pipeline, rows=50)
    with pipeline.src() as conn:
        conn.execute("DELETE FROM tracksolid.positions WHERE id = 9")
    done: list[Any] = []
    with pipeline.wh() as blocker:
        # Hold bronze so the repair waits mid-comparison, with the table's lock taken.
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE bronze.positions IN ACCESS EXCLUSIVE MODE")

        def repair() -> None:
            with pipeline.context() as ctx:
                done.append(reconcile_table(ctx, "positions", repair=True, options=Options(range_rows=10)))

        worker = threading.Thread(target=repair)
        worker.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            waiting = blocker.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted "
                                      "AND relation = 'bronze.positions'::regclass").fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the repair never reached bronze")
        [outcome] = pipeline.run("positions")
        assert outcome.status == "skipped" and "lock" in outcome.message
        blocker.execute("COMMIT")
        worker.join(30)
    [report] = done
    assert report.repair is not None and report.repair.rows_deleted == 1
    with pipeline.wh() as wh:
        assert wh.execute("SELECT count(*) FROM bronze.positions WHERE id = 9").fetchone() == (0,)


def test_a_repair_killed_before_commit_is_loaded_by_the_next_run(pipeline: Pipeline) -> None:
    loaded_positions(pipeline, rows=50)
    with pipeline.src() as conn:
        conn.execute("DELETE FROM tracksolid.positions WHERE id IN (3, 4)")
        conn.execute("UPDATE tracksolid.positions SET speed = 1.25 WHERE id = 10")
    killed = pipeline.cli("reconcile", "positions", "--repair", env={"BRONZELINE_CRASH_AT": "load"})
    assert killed.returncode == -9
    waiting = pipeline.files("exports", "positions")
    assert len(waiting) == 2  # the batch and its manifest, complete
    refused = reconcile(pipeline, "positions", "--repair")
    assert refused.returncode == 1 and "wait in exports/" in refused.stderr
    [outcome] = pipeline.run("positions")
    assert outcome.status == "loaded" and outcome.rows_deleted == 2 and outcome.rows_loaded == 1
    assert pipeline.files("exports", "positions") == []
    assert set(waiting) <= set(pipeline.files("processed", "positions"))
    assert reconcile(pipeline, "positions").returncode == 0


def test_tables_without_a_key_or_never_loaded_are_refused(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(POSITIONS)
    pipeline.write_config(TABLE + "  - name: keyless\n    from: tracksolid.positions\n    mode: snapshot\n")
    pipeline.cli("migrate", check=True)
    never = reconcile(pipeline, "positions")
    assert never.returncode == 1 and "nothing was loaded yet" in never.stderr
    keyless = reconcile(pipeline, "keyless")
    assert keyless.returncode == 1 and "set `key:`" in keyless.stderr


def test_text_keys_collated_differently_on_the_two_sides_compare_in_binary_order(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute('CREATE TABLE tracksolid.codes (code text COLLATE "C" PRIMARY KEY, v int)')
        conn.execute("INSERT INTO tracksolid.codes SELECT w || g, g FROM unnest(ARRAY['apple', 'Banana', 'cherry', "
                     "'Date', 'élan', 'Zulu', '_x', '10', '9']) w, generate_series(1, 5) g")
    pipeline.write_config("  - name: codes\n    from: tracksolid.codes\n    mode: snapshot\n    key: [code]\n")
    pipeline.cli("migrate", check=True)
    assert [o.status for o in pipeline.run()] == ["loaded"]
    with pipeline.context() as ctx:
        same = reconcile_table(ctx, "codes", options=Options(range_rows=4, leaf_rows=2))
    assert same.differences == 0 and same.source_rows == same.bronze_rows == 45
    with pipeline.src() as conn:
        conn.execute("DELETE FROM tracksolid.codes WHERE code IN ('Banana3', 'élan1')")
    found = reconcile(pipeline, "codes", "--json", "--range-rows", "4", "--leaf-rows", "2")
    [report] = json.loads(found.stdout)["tables"]
    assert [k["code"] for k in report["extra"]["keys"]] == ["Banana3", "élan1"] and report["differences"] == 2
