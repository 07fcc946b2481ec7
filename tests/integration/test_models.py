"""Models against a real PostgreSQL: every materialization, the graph, incremental builds against a full
recomputation, failures that keep the published version and block dependents, readers never blocked,
and a build killed before it publishes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bronzeline.errors import ConfigError
from bronzeline.models.build import build
from tests.cli import invoke
from tests.integration.pipeline import Pipeline

POSITIONS = """
CREATE TABLE tracksolid.positions (
    id bigint PRIMARY KEY, imei text NOT NULL, speed numeric(6,2), gps_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now());
"""
TABLES = "  - {name: positions, from: tracksolid.positions, watermark: recorded_at, key: [id]}\n"

MODELS = {
    "silver/fast.sql": "SELECT id, imei, speed FROM bronze.positions WHERE speed > 50\n",
    "silver/per_imei.sql": "SELECT imei, count(*) AS fixes, max(speed) AS top FROM bronze.positions GROUP BY imei;\n",
    "reporting/v_per_imei.sql": "SELECT imei, fixes FROM silver.per_imei",
    "gold/positions_inc.sql": "SELECT id, imei, speed, gps_time, recorded_at FROM bronze.positions",
    "gold/daily.sql": """
WITH touched AS (
    SELECT DISTINCT imei, date_trunc('day', gps_time) AS day FROM bronze.positions
    WHERE recorded_at > current_setting('bronzeline.window_start')::timestamptz
      AND recorded_at <= current_setting('bronzeline.window_end')::timestamptz)
SELECT p.imei, date_trunc('day', p.gps_time) AS day, count(*) AS fixes, max(p.speed) AS top,
       max(p.recorded_at) AS recorded_at
FROM bronze.positions p JOIN touched t ON t.imei = p.imei AND t.day = date_trunc('day', p.gps_time)
WHERE p.recorded_at <= current_setting('bronzeline.window_end')::timestamptz
GROUP BY 1, 2
""",
    "reporting/functions.sql": """
CREATE OR REPLACE FUNCTION reporting.fast_count(min_speed numeric) RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT count(*) FROM silver.fast WHERE speed > min_speed $$;
""",
}
PROPERTIES = """
models:
  - name: silver.per_imei
    materialized: table
    key: [imei]
  - name: reporting.v_per_imei
    materialized: matview
    key: [imei]
  - name: gold.positions_inc
    materialized: incremental
    key: [id]
    incremental: {watermark: recorded_at}
  - name: gold.daily
    materialized: incremental
    key: [imei, day]
    incremental: {watermark: recorded_at}
  - name: reporting.functions
    materialized: function
    depends_on: [silver.fast]
"""


def write_models(pipe: Pipeline, files: dict[str, str], properties: str = PROPERTIES) -> None:
    root = pipe.tmp / "models"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "properties.yml").write_text(properties)
    pipe.write_config(TABLES, "models: {path: models}\n")


def insert(pipe: Pipeline, first: int, count: int, *, day: str = "2026-11-01") -> None:
    with pipe.src() as conn:
        conn.execute("INSERT INTO tracksolid.positions (id, imei, speed, gps_time) SELECT g, 'imei' || (g %% 7), "
                     "(g %% 120)::numeric, %s::timestamptz + g * interval '1 minute' "
                     "FROM generate_series(%s::int, %s::int) g", (day, first, first + count - 1))


def setup(pipe: Pipeline, files: dict[str, str] = MODELS, properties: str = PROPERTIES, rows: int = 500) -> None:
    with pipe.src() as conn:
        conn.execute(POSITIONS)
    insert(pipe, 1, rows)
    write_models(pipe, files, properties)
    pipe.cli("migrate", check=True)
    time.sleep(0.15)
    assert [o.status for o in pipe.run()] == ["loaded"]


def rows(pipe: Pipeline, query: str) -> list[tuple[Any, ...]]:
    with pipe.wh() as conn:
        return conn.execute(query).fetchall()


def test_every_materialization_builds_the_right_contents(pipeline: Pipeline) -> None:
    setup(pipeline)
    report = build(pipeline.config())
    assert report.ok, [m.as_json() for m in report.models]
    statuses = {m.model: (m.status, m.materialized) for m in report.models}
    assert statuses == {"silver.fast": ("built", "view"), "silver.per_imei": ("built", "table"),
                        "reporting.v_per_imei": ("built", "matview"), "gold.positions_inc": ("built", "incremental"),
                        "gold.daily": ("built", "incremental"), "reporting.functions": ("built", "function")}
    order = [m.model for m in report.models]
    assert order.index("silver.per_imei") < order.index("reporting.v_per_imei")
    assert order.index("silver.fast") < order.index("reporting.functions")
    expected_per_imei = rows(pipeline, "SELECT imei, count(*), max(speed) FROM bronze.positions GROUP BY 1 ORDER BY 1")
    assert rows(pipeline, "SELECT * FROM silver.per_imei ORDER BY 1") == expected_per_imei
    assert rows(pipeline, "SELECT * FROM reporting.v_per_imei ORDER BY 1") == [r[:2] for r in expected_per_imei]
    assert rows(pipeline, "SELECT count(*) FROM silver.fast") == rows(
        pipeline, "SELECT count(*) FROM bronze.positions WHERE speed > 50")
    assert rows(pipeline, "SELECT reporting.fast_count(100)") == rows(
        pipeline, "SELECT count(*) FROM bronze.positions WHERE speed > 100")
    assert rows(pipeline, "SELECT count(*) FROM gold.positions_inc") == [(500,)]
    assert rows(pipeline, "SELECT count(*) FROM reporting.v_per_imei") == [(7,)]
    with pipeline.wh() as conn:
        ledger = conn.execute("SELECT model, status, rows FROM dwh_control.model_runs ORDER BY build_id").fetchall()
    assert {m: s for m, s, _ in ledger} == {m: "built" for m in statuses}
    assert dict((m, n) for m, _, n in ledger)["silver.per_imei"] == 7


def full_daily(pipe: Pipeline) -> list[tuple[Any, ...]]:
    return rows(pipe, "SELECT imei, date_trunc('day', gps_time), count(*), max(speed), max(recorded_at) "
                      "FROM bronze.positions GROUP BY 1, 2 ORDER BY 1, 2")


def test_incremental_builds_equal_a_full_recomputation_without_rebuilding(pipeline: Pipeline) -> None:
    setup(pipeline)
    assert build(pipeline.config()).ok
    for round_, (first, day) in enumerate([(501, "2026-11-01"), (1001, "2026-11-02"), (1501, "2026-11-01")]):
        insert(pipeline, first, 300, day=day)  # the third round: late rows for a day already built
        time.sleep(0.15)
        assert [o.status for o in pipeline.run()] == ["loaded"]
        report = build(pipeline.config(), ["gold.positions_inc", "gold.daily"])
        assert report.ok, [m.message for m in report.models]
        merged = {m.model: m.rows for m in report.models}
        assert merged["gold.positions_inc"] == 300, round_  # only the new rows were read, not everything again
        assert rows(pipeline, "SELECT * FROM gold.positions_inc ORDER BY id") == rows(
            pipeline, "SELECT id, imei, speed, gps_time, recorded_at FROM bronze.positions ORDER BY id")
        assert rows(pipeline, "SELECT * FROM gold.daily ORDER BY 1, 2") == full_daily(pipeline)
    # nothing new: an incremental build merges nothing
    report = build(pipeline.config(), ["gold.positions_inc"])
    assert report.ok and report.models[0].rows == 0
    # --full-refresh recomputes from the start, with the same result
    report = build(pipeline.config(), ["gold.daily"], full_refresh=True)
    assert report.ok and rows(pipeline, "SELECT * FROM gold.daily ORDER BY 1, 2") == full_daily(pipeline)


def test_a_failed_model_keeps_its_version_blocks_dependents_and_the_rest_builds(pipeline: Pipeline) -> None:
    setup(pipeline)
    assert build(pipeline.config()).ok
    before = rows(pipeline, "SELECT * FROM silver.per_imei ORDER BY 1")
    broken = dict(MODELS)
    broken["silver/per_imei.sql"] = "SELECT imei, count(*) AS fixes, max(speed) AS top FROM bronze.positions GROUP BY\n"
    (pipeline.tmp / "models" / "silver" / "per_imei.sql").write_text(broken["silver/per_imei.sql"].replace(
        "GROUP BY\n", "GROUP BY imei HAVING no_such_column > 0\n"))
    insert(pipeline, 501, 100)
    time.sleep(0.15)
    pipeline.run()
    report = build(pipeline.config())
    assert not report.ok
    by = {m.model: m for m in report.models}
    assert by["silver.per_imei"].status == "failed" and "silver/per_imei.sql" in by["silver.per_imei"].message
    assert "no_such_column" in by["silver.per_imei"].message
    assert by["reporting.v_per_imei"].status == "blocked"
    assert "blocked by silver.per_imei" in by["reporting.v_per_imei"].message
    assert by["gold.positions_inc"].status == "built" and by["silver.fast"].status == "built"
    assert rows(pipeline, "SELECT * FROM silver.per_imei ORDER BY 1") == before  # the last good version
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), "build", env=pipeline.environ())
    assert proc.returncode == 1 and "error: silver.per_imei (silver/per_imei.sql):" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("files", "properties", "needle"), [
    ({"silver/a.sql": "SELECT * FROM silver.b", "silver/b.sql": "SELECT * FROM silver.a"}, "", "cycle"),
    ({"silver/a.sql": "SELECT * FROM bronze.nothing_here"}, "", "references bronze.nothing_here"),
    ({"silver/a.sql": "SELECT FROM WHERE ((("}, "", "cannot be parsed"),
    ({"silver/a.sql": "SELECT 1 AS x"}, "models:\n  - {name: silver.a, materialized: snapshot}\n", "materialized"),
    ({"silver/a.sql": "SELECT 1 AS x"}, "models:\n  - {name: silver.zzz}\n", "no model file"),
    ({"silver/a.sql": "SELECT 1 AS x"}, "models:\n  - {name: silver.a, colour: red}\n", "unknown key 'colour'"),
    ({"silver/a.sql": "SELECT 1 AS x"}, "models:\n  - {name: silver.a, data_tests: [is_lovely]}\n", "is_lovely"),
])
def test_graph_and_property_errors_are_one_line(pipeline: Pipeline, files: dict[str, str], properties: str,
                                                needle: str) -> None:
    with pipeline.src() as conn:
        conn.execute(POSITIONS)
    write_models(pipeline, files, properties)
    with pytest.raises(ConfigError) as error:
        build(pipeline.config())
    assert needle in str(error.value)
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), "build", env=pipeline.environ())
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_readers_are_never_blocked(pipeline: Pipeline) -> None:
    setup(pipeline, rows=3000)
    assert build(pipeline.config()).ok
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        with psycopg.connect(pipeline.warehouse_admin, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            while not stop.is_set():
                try:
                    for relation in ("silver.per_imei", "reporting.v_per_imei", "gold.positions_inc", "silver.fast"):
                        row = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()
                        assert row is not None
                        if relation == "silver.per_imei":
                            seen.append(int(row[0]))
                except BaseException as exc:  # a lock timeout would land here
                    errors.append(exc)
                    return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        with pipeline.wh() as holder:  # a long report holding the published table the whole time
            holder.execute("BEGIN")
            holder.execute("SELECT count(*) FROM silver.per_imei")
            for first in (3001, 4001):
                insert(pipeline, first, 1000)
                time.sleep(0.15)
                pipeline.run()
                assert build(pipeline.config()).ok
            holder.execute("COMMIT")
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not errors, errors
    assert seen and min(seen) == 7  # never an empty or half-built table


def test_a_build_killed_before_it_publishes_keeps_the_published_version(pipeline: Pipeline) -> None:
    setup(pipeline)
    assert build(pipeline.config()).ok
    before = rows(pipeline, "SELECT * FROM gold.positions_inc ORDER BY id")
    insert(pipeline, 501, 200)
    time.sleep(0.15)
    pipeline.run()
    proc = subprocess.run([sys.executable, "-m", "bronzeline.cli", "-c", str(pipeline.config_path), "build",
                           "gold.positions_inc"], env={**pipeline.environ(), "BRONZELINE_CRASH_AT": "publish"},
                          capture_output=True, text=True, timeout=120, cwd=pipeline.tmp)
    assert proc.returncode == -9, proc.stderr
    assert rows(pipeline, "SELECT * FROM gold.positions_inc ORDER BY id") == before
    assert rows(pipeline, "SELECT status FROM dwh_control.model_runs WHERE model = 'gold.positions_inc' "
                          "ORDER BY build_id DESC LIMIT 1") == [("building",)]
    report = build(pipeline.config(), ["gold.positions_inc"])
    assert report.ok and report.models[0].rows == 200
    assert rows(pipeline, "SELECT * FROM gold.positions_inc ORDER BY id") == rows(
        pipeline, "SELECT id, imei, speed, gps_time, recorded_at FROM bronze.positions ORDER BY id")
    statuses = [r[0] for r in rows(pipeline, "SELECT status FROM dwh_control.model_runs WHERE model = "
                                             "'gold.positions_inc' ORDER BY build_id")]
    assert statuses == ["built", "failed", "built"]  # the killed build is marked failed by the next one


CHECKED = PROPERTIES.replace("""  - name: silver.per_imei
    materialized: table
    key: [imei]
""", """  - name: silver.per_imei
    materialized: table
    key: [imei]
    data_tests:
      - row_count: {min: 1}
    columns:
      - name: top
        data_tests:
          - accepted_range: {max_value: 150}
          - accepted_range: {max_value: 100, severity: warn}
""") + """
sources:
  - name: bronze.positions
    columns:
      - name: speed
        data_tests: [not_null]
"""


def test_an_error_check_keeps_the_published_table_and_blocks_dependents_a_warn_blocks_nothing(
        pipeline: Pipeline) -> None:
    setup(pipeline, properties=CHECKED)
    report = build(pipeline.config())
    assert report.ok, [m.as_json() for m in report.models]
    per_imei = {m.model: m for m in report.models}["silver.per_imei"]
    assert sorted(c.status for c in per_imei.checks) == ["pass", "pass", "warn"]  # max 119 > 100: a warning only
    assert [c.status for c in report.sources] == ["pass"]
    before = rows(pipeline, "SELECT * FROM silver.per_imei ORDER BY 1")
    matview_before = rows(pipeline, "SELECT * FROM reporting.v_per_imei ORDER BY 1")
    with pipeline.src() as conn:  # a speed the error check refuses
        conn.execute("INSERT INTO tracksolid.positions (id, imei, speed, gps_time) VALUES (9001, 'new', 999, now())")
    time.sleep(0.15)
    pipeline.run()
    report = build(pipeline.config())
    assert not report.ok
    by = {m.model: m for m in report.models}
    assert by["silver.per_imei"].status == "failed" and "accepted_range(top)" in by["silver.per_imei"].message
    failing = [c for c in by["silver.per_imei"].checks if c.status == "fail"]
    assert len(failing) == 1 and failing[0].failing_rows == 1 and failing[0].sample
    assert by["reporting.v_per_imei"].status == "blocked"
    assert by["gold.positions_inc"].status == "built"  # independent of the failed model
    assert rows(pipeline, "SELECT * FROM silver.per_imei ORDER BY 1") == before  # never published
    assert rows(pipeline, "SELECT * FROM reporting.v_per_imei ORDER BY 1") == matview_before
    with pipeline.wh() as conn:
        recorded = conn.execute("SELECT status, failing_rows FROM dwh_control.check_results WHERE relation = "
                                "'silver.per_imei' AND check_name = 'accepted_range' AND severity = 'error' "
                                "ORDER BY result_id DESC LIMIT 1").fetchone()
    assert recorded == ("fail", 1)  # in the ledger although the build rolled back
    # `test` runs the checks without building: the published table passes, so exit 0; the CLI says so
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), "test", "silver.per_imei", env=pipeline.environ())
    assert proc.returncode == 0, proc.stderr
    with pipeline.wh() as conn:  # now make the published table itself fail a check
        conn.execute("UPDATE silver.per_imei SET top = 500 WHERE imei = 'imei1'")
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), "test", "silver.per_imei", env=pipeline.environ())
    assert proc.returncode == 1 and "error: silver.per_imei accepted_range(top): 1 of 7 rows fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), "test", "--json", env=pipeline.environ())
    assert proc.returncode == 1


def test_models_are_readable_by_the_read_only_role(pipeline: Pipeline, pg_admin_dsn: str) -> None:
    ro, login = f"bl_ro_{uuid.uuid4().hex[:8]}", f"bl_rologin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ro)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(login), sql.Literal(pipeline.password), sql.Identifier(ro)))
    try:
        with pipeline.src() as conn:
            conn.execute(POSITIONS)
        insert(pipeline, 1, 100)
        write_models(pipeline, MODELS)
        pipeline.write_config(TABLES, f"models: {{path: models}}\nwarehouse:\n  roles: {{readonly: {ro}}}\n")
        pipeline.cli("migrate", check=True)
        time.sleep(0.15)
        pipeline.run()
        assert build(pipeline.config()).ok
        owner = str(psycopg.conninfo.conninfo_to_dict(pipeline.warehouse_dsn)["user"])
        with psycopg.connect(pipeline.warehouse_dsn.replace(f"user={owner}", f"user={login}"),
                             autocommit=True) as reader:
            for relation in ("silver.fast", "silver.per_imei", "reporting.v_per_imei", "gold.positions_inc",
                             "gold.daily"):
                reader.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*relation.split("."))))
            assert reader.execute("SELECT reporting.fast_count(0)").fetchone() is not None
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute("DELETE FROM silver.per_imei")
    finally:
        with psycopg.connect(pipeline.warehouse_admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(ro)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}, {}").format(sql.Identifier(login), sql.Identifier(ro)))
