"""`bronzeline verify`: every gate passes after the core scenario, and each way of breaking the warehouse,
the store or the source fails (or warns) exactly the gate that should — with exit 1 on a failure."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import psycopg
from psycopg import sql

from tests.integration.pipeline import Pipeline
from tests.integration.test_core import insert_positions, setup


def verify(pipeline: Pipeline, *args: str) -> tuple[int, dict[str, Any]]:
    proc = pipeline.cli("verify", "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def gates(report: dict[str, Any], status: str) -> set[tuple[str, str]]:
    return {(g["gate"], g["subject"]) for g in report["gates"] if g["status"] == status}


def gate(report: dict[str, Any], name: str, subject: str) -> dict[str, Any]:
    return next(g for g in report["gates"] if g["gate"] == name and g["subject"] == subject)


def core_scenario(pipeline: Pipeline) -> None:
    setup(pipeline)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.src() as conn:
        insert_positions(conn, 300, start=500)
        conn.execute("UPDATE tracksolid.devices SET plate = 'KDK 999Z' WHERE imei = '353549000000001'")
    time.sleep(0.15)
    pipeline.cli("run", check=True)


def test_verify_passes_then_each_break_fails_its_gate(pipeline: Pipeline) -> None:
    core_scenario(pipeline)
    code, report = verify(pipeline)
    assert code == 0 and report["ok"], gates(report, "fail")
    assert gates(report, "fail") == set() and gates(report, "warn") == set()
    assert gates(report, "skip") == {("roles", "warehouse.roles")}  # no roles configured
    expected = {"connection", "store_writable", "migrations", "bronze_key", "columns", "watermark_seeded",
                "source_visibility", "watermark_index", "null_watermarks", "loaded_run", "parity", "geometry",
                "exports_empty", "accounting", "freshness", "failures_24h", "growth"}
    assert {g["gate"] for g in report["gates"]} == expected | {"roles"}
    parity = gate(report, "parity", "position_history")["numbers"]
    assert parity["source_rows"] == parity["bronze_rows"] == 800
    assert gate(report, "parity", "devices")["numbers"]["bronze_rows"] == 80
    geo = gate(report, "geometry", "position_history")["numbers"]
    assert geo["sampled"] == 200 and geo["compared"] == 200 and geo["mismatched"] == 0
    assert gate(report, "accounting", "extract_runs")["numbers"]["runs_checked"] == 4
    human = pipeline.cli("verify")
    assert human.returncode == 0 and "PASS" in human.stdout and "0 failed" in human.stdout

    def only(gate_name: str, subject: str) -> dict[str, Any]:
        code, report = verify(pipeline)
        assert code == 1 and not report["ok"]
        assert gates(report, "fail") == {(gate_name, subject)}, gates(report, "fail")
        return gate(report, gate_name, subject)

    # 1. a file left in exports/
    processed = pipeline.blob / "processed" / "position_history"
    exports = pipeline.blob / "exports" / "position_history"
    exports.mkdir(parents=True, exist_ok=True)
    left = sorted(processed.glob("*.csv.gz"))[0]
    shutil.copy(left, exports / left.name)
    failed = only("exports_empty", "position_history")
    assert failed["numbers"]["files"] == 1 and left.name in failed["detail"]
    (exports / left.name).unlink()

    with pipeline.wh() as wh:
        # 2. a deleted bronze row
        wh.execute("CREATE TEMP TABLE keep AS SELECT * FROM bronze.position_history WHERE id = 7")
        wh.execute("DELETE FROM bronze.position_history WHERE id = 7")
        failed = only("parity", "position_history")
        assert failed["numbers"]["source_rows"] - failed["numbers"]["bronze_rows"] == 1
        wh.execute("INSERT INTO bronze.position_history SELECT * FROM keep")
        # ... and from a snapshot table: exact against the snapshot at load time
        wh.execute("CREATE TEMP TABLE keep_dev AS SELECT * FROM bronze.devices WHERE imei = '353549000000003'")
        wh.execute("DELETE FROM bronze.devices WHERE imei = '353549000000003'")
        failed = only("parity", "devices")
        assert failed["numbers"]["source_rows_at_load"] == 80 and failed["numbers"]["bronze_rows"] == 79
        wh.execute("INSERT INTO bronze.devices SELECT * FROM keep_dev")

        # 3. a geometry that no longer round-trips (moved, and its SRID lost)
        wh.execute("CREATE TEMP TABLE keep_geom AS SELECT id, geom FROM bronze.position_history")
        wh.execute("UPDATE bronze.position_history SET geom = ST_Translate(geom, 0.001, 0) WHERE id % 2 = 0")
        failed = only("geometry", "position_history")
        assert 0 < failed["numbers"]["mismatched"] < 200
        wh.execute("UPDATE bronze.position_history b SET geom = k.geom FROM keep_geom k WHERE k.id = b.id")

        # 4. a run whose rows do not add up (the check constraint must be gone for that to happen)
        wh.execute("ALTER TABLE dwh_control.extract_runs DROP CONSTRAINT extract_runs_accounted")
        run_id = wh.execute("UPDATE dwh_control.extract_runs SET rows_skipped = rows_skipped + 1 WHERE run_id = "
                            "(SELECT max(run_id) FROM dwh_control.extract_runs) RETURNING run_id").fetchone()
        failed = only("accounting", "extract_runs")
        assert run_id is not None and failed["numbers"]["mismatched_runs"] == [run_id[0]]
        wh.execute("UPDATE dwh_control.extract_runs SET rows_skipped = rows_skipped - 1 WHERE run_id = %s", run_id)

        # 5. a stale table: its last load three days ago (the default cadence is a day, so the limit is 2 days)
        wh.execute("UPDATE dwh_control.extract_runs SET run_started_at = run_started_at - interval '3 days', "
                   "run_finished_at = run_finished_at - interval '3 days' WHERE table_name = 'devices'")
        failed = only("freshness", "devices")
        assert failed["numbers"]["seconds_since_load"] > 3 * 86400 - 60
        assert failed["numbers"]["limit_seconds"] == 2 * 86400
        wh.execute("UPDATE dwh_control.extract_runs SET run_started_at = run_started_at + interval '3 days', "
                   "run_finished_at = run_finished_at + interval '3 days' WHERE table_name = 'devices'")

        # 6. a failed run in the last 24 h
        wh.execute("INSERT INTO dwh_control.extract_runs (table_name, mode, status, error_message) "
                   "VALUES ('devices', 'snapshot', 'failed', 'cannot connect to ''source''')")
        failed = only("failures_24h", "devices")
        assert failed["numbers"]["failed_runs"] == 1 and "cannot connect" in failed["detail"]
        wh.execute("DELETE FROM dwh_control.extract_runs WHERE status = 'failed'")

        # 7. bronze not keeping up: the source gains rows an hour old while the watermark is stuck 2 h back
        #    (freshness fails too: the watermark is older than 2 × a 10-minute cadence)
        with pipeline.src() as src:
            src.execute("ALTER TABLE tracksolid.position_history ALTER COLUMN recorded_at DROP DEFAULT")
            src.execute("INSERT INTO tracksolid.position_history (imei, gps_time, recorded_at) "
                        "SELECT '353549000000001', now(), now() - interval '1 hour' FROM generate_series(1, 10)")
        wh.execute("UPDATE dwh_control.extract_watermarks SET last_extracted_at = now() - interval '2 hours'")
        code, report = verify(pipeline, "--cadence", "10min")
        assert code == 1
        assert gates(report, "fail") == {("growth", "position_history"), ("freshness", "position_history")}
        grown = gate(report, "growth", "position_history")["numbers"]
        assert grown["source_rows"] - grown["bronze_rows"] == 10
        assert gate(report, "parity", "position_history")["status"] == "pass"

        # 8. migrations: a changed checksum fails; stages can be checked on their own
        wh.execute("UPDATE dwh_control.schema_migrations SET checksum = 'x'")
        code, report = verify(pipeline, "--stage", "pre-deploy")
        assert code == 1 and gates(report, "fail") == {("migrations", "dwh_control")}
        assert {g["stage"] for g in report["gates"]} == {"pre-deploy"}


def test_pre_deploy_gates(pipeline: Pipeline, pg_admin_dsn: str) -> None:
    setup(pipeline)
    pipeline.cli("migrate", check=True)
    code, report = verify(pipeline, "--stage", "pre-deploy")
    assert code == 0, gates(report, "fail")
    # before the first run the first-run gates fail, and say how to go on
    code, report = verify(pipeline, "--stage", "first-run")
    assert code == 1 and ("loaded_run", "devices") in gates(report, "fail")
    assert "bronzeline run devices" in gate(report, "loaded_run", "devices")["detail"]

    reader = str(psycopg.conninfo.conninfo_to_dict(pipeline.source_dsn)["user"])
    with pipeline.src() as src, pipeline.wh() as wh:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("REVOKE pg_read_all_stats FROM {}").format(sql.Identifier(reader)))
        src.execute("DROP INDEX tracksolid.position_history_recorded_at_idx")
        src.execute("ALTER TABLE tracksolid.position_history ALTER COLUMN recorded_at DROP NOT NULL")
        src.execute("INSERT INTO tracksolid.position_history (imei, gps_time, recorded_at) "
                    "VALUES ('x', now(), NULL), ('y', now(), NULL)")
        wh.execute("DELETE FROM dwh_control.extract_watermarks")
        wh.execute("ALTER TABLE bronze.devices DROP CONSTRAINT devices_pkey")
        code, report = verify(pipeline, "--stage", "pre-deploy")
        assert code == 1
        assert gates(report, "fail") == {("source_visibility", "position_history"),
                                         ("watermark_seeded", "position_history"), ("bronze_key", "devices")}
        assert f"GRANT pg_read_all_stats TO {reader}" in gate(report, "source_visibility", "position_history")["detail"]
        assert gates(report, "warn") == {("watermark_index", "position_history"),
                                         ("null_watermarks", "position_history")}
        assert gate(report, "null_watermarks", "position_history")["numbers"]["rows"] == 2

    # an object store that cannot be written, and a source that does not answer
    (pipeline.tmp / "notadir").write_text("a file where the blob folder should be")
    text = pipeline.config_path.read_text().replace("file://./blob", "file://./notadir")
    pipeline.config_path.write_text(text)
    down = "host=127.0.0.1 port=1 dbname=x user=x password=Gone123 connect_timeout=2"
    proc = pipeline.cli("verify", "--json", "--stage", "pre-deploy", env={"SOURCE_DSN": down})
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and "Gone123" not in proc.stdout + proc.stderr
    assert {("connection", "source"), ("store_writable", "blob")} <= gates(report, "fail")
    assert ("columns", "position_history") in gates(report, "skip")


def test_roles_gate(pipeline: Pipeline, pg_admin_dsn: str) -> None:
    role = f"bl_ro_{pipeline.password[-8:].lower()}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        setup(pipeline, rows=10)
        pipeline.write_config(pipeline.tables_yaml, extra_yaml=f"warehouse:\n  roles: {{readonly: {role}}}\n")
        pipeline.cli("migrate", check=True)
        code, report = verify(pipeline, "--stage", "pre-deploy")
        assert code == 0 and gate(report, "roles", "warehouse.roles")["status"] == "pass"
        with pipeline.wh() as wh:
            wh.execute(sql.SQL("REVOKE SELECT ON dwh_control.v_recent_failures FROM {}").format(sql.Identifier(role)))
        code, report = verify(pipeline, "--stage", "pre-deploy")
        assert code == 1 and gates(report, "fail") == {("roles", "warehouse.roles")}
        assert "v_recent_failures" in gate(report, "roles", "warehouse.roles")["detail"]
    finally:
        with psycopg.connect(pipeline.warehouse_admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
