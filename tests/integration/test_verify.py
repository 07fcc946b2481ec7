"""`bronzeline verify`: every gate passes after the core scenario, and each way of breaking the warehouse,
the store or the source fails (or warns) exactly the gate that should — with exit 1 on a failure."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import pipeline_in
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


@pytest.fixture(scope="module")
def scenario(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The core scenario once for the module; every case below breaks one thing and puts it back."""
    with pipeline_in(pg_admin_dsn, tmp_path_factory.mktemp("verify")) as pipeline:
        core_scenario(pipeline)
        yield pipeline


def test_every_gate_passes_after_the_core_scenario(scenario: Pipeline) -> None:
    code, report = verify(scenario)
    assert code == 0 and report["ok"], gates(report, "fail")
    assert gates(report, "fail") == set() and gates(report, "warn") == set()
    assert gates(report, "skip") == {("roles", "warehouse.roles"), ("cdc_slot", "cdc")}  # no roles, no cdc tables
    expected = {"connection", "store_writable", "migrations", "bronze_key", "columns", "watermark_seeded",
                "source_visibility", "watermark_index", "null_watermarks", "loaded_run", "parity", "geometry",
                "exports_empty", "accounting", "freshness", "failures_24h", "growth"}
    assert {g["gate"] for g in report["gates"]} == expected | {"roles", "cdc_slot"}
    parity = gate(report, "parity", "position_history")["numbers"]
    assert parity["source_rows"] == parity["bronze_rows"] == 800
    assert gate(report, "parity", "devices")["numbers"]["bronze_rows"] == 80
    geo = gate(report, "geometry", "position_history")["numbers"]
    assert geo["sampled"] == 200 and geo["compared"] == 200 and geo["mismatched"] == 0
    assert gate(report, "accounting", "extract_runs")["numbers"]["runs_checked"] == 4
    human = scenario.cli("verify")
    assert human.returncode == 0 and "PASS" in human.stdout and "0 failed" in human.stdout


Conn = psycopg.Connection[Any]


@dataclass
class Break:
    """One way of breaking the warehouse, the store or the source: inside `apply` it is broken; on leaving
    everything is put back (also when the checks failed)."""

    apply: Callable[[Pipeline, Conn], AbstractContextManager[None]]
    fails: set[tuple[str, str]]
    check: Callable[[dict[str, Any]], None]
    args: tuple[str, ...] = ()


def _leftover(pipeline: Pipeline, suffixes: tuple[str, ...]) -> Iterator[None]:
    """Files of the first processed batch copied back into exports/."""
    processed = pipeline.blob / "processed" / "position_history"
    exports = pipeline.blob / "exports" / "position_history"
    exports.mkdir(parents=True, exist_ok=True)
    stem = sorted(processed.glob("*.csv.gz"))[0].name.removesuffix(".csv.gz")
    copies: list[Path] = []
    try:
        for suffix in suffixes:
            shutil.copy(processed / (stem + suffix), exports / (stem + suffix))
            copies.append(exports / (stem + suffix))
        yield
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)


@contextmanager
def data_file_without_manifest(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    yield from _leftover(pipeline, (".csv.gz",))


@contextmanager
def complete_batch_left(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    yield from _leftover(pipeline, (".csv.gz", ".manifest.json"))


@contextmanager
def deleted_bronze_row(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    wh.execute("CREATE TEMP TABLE keep AS SELECT * FROM bronze.position_history WHERE id = 7")
    wh.execute("DELETE FROM bronze.position_history WHERE id = 7")
    try:
        yield
    finally:
        wh.execute("INSERT INTO bronze.position_history SELECT * FROM keep")


@contextmanager
def deleted_snapshot_row(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    wh.execute("CREATE TEMP TABLE keep_dev AS SELECT * FROM bronze.devices WHERE imei = '353549000000003'")
    wh.execute("DELETE FROM bronze.devices WHERE imei = '353549000000003'")
    try:
        yield
    finally:
        wh.execute("INSERT INTO bronze.devices SELECT * FROM keep_dev")


@contextmanager
def moved_geometry(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    wh.execute("CREATE TEMP TABLE keep_geom AS SELECT id, geom FROM bronze.position_history")
    wh.execute("UPDATE bronze.position_history SET geom = ST_Translate(geom, 0.001, 0) WHERE id % 2 = 0")
    try:
        yield
    finally:
        wh.execute("UPDATE bronze.position_history b SET geom = k.geom FROM keep_geom k WHERE k.id = b.id")


@contextmanager
def unaccounted_run(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    # the check constraint must be gone for that to happen
    wh.execute("ALTER TABLE dwh_control.extract_runs DROP CONSTRAINT extract_runs_accounted")
    wh.execute("UPDATE dwh_control.extract_runs SET rows_skipped = rows_skipped + 1 WHERE run_id = 4")
    try:
        yield
    finally:
        wh.execute("UPDATE dwh_control.extract_runs SET rows_skipped = rows_skipped - 1 WHERE run_id = 4")
        wh.execute("ALTER TABLE dwh_control.extract_runs ADD CONSTRAINT extract_runs_accounted CHECK ("
                   "status <> 'loaded' OR rows_extracted = rows_loaded + rows_skipped)")


@contextmanager
def stale_snapshot(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    # its last load three days ago (the default cadence is a day, so the limit is 2 days)
    wh.execute("UPDATE dwh_control.extract_runs SET run_started_at = run_started_at - interval '3 days', "
               "run_finished_at = run_finished_at - interval '3 days' WHERE table_name = 'devices'")
    try:
        yield
    finally:
        wh.execute("UPDATE dwh_control.extract_runs SET run_started_at = run_started_at + interval '3 days', "
                   "run_finished_at = run_finished_at + interval '3 days' WHERE table_name = 'devices'")


@contextmanager
def failed_run(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    wh.execute("INSERT INTO dwh_control.extract_runs (table_name, mode, status, error_message) "
               "VALUES ('devices', 'snapshot', 'failed', 'cannot connect to ''source''')")
    try:
        yield
    finally:
        wh.execute("DELETE FROM dwh_control.extract_runs WHERE status = 'failed'")


@contextmanager
def falling_behind(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    """The source gains rows an hour old while the watermark is stuck 2 h back (freshness fails too: the
    watermark is older than 2 × a 10-minute cadence)."""
    mark = wh.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks").fetchone()
    with pipeline.src() as src:
        src.execute("INSERT INTO tracksolid.position_history (imei, gps_time, recorded_at, source) "
                    "SELECT '353549000000001', now(), now() - interval '1 hour', 'verify-test' "
                    "FROM generate_series(1, 10)")
    wh.execute("UPDATE dwh_control.extract_watermarks SET last_extracted_at = now() - interval '2 hours'")
    try:
        yield
    finally:
        with pipeline.src() as src:
            src.execute("DELETE FROM tracksolid.position_history WHERE source = 'verify-test'")
        wh.execute("UPDATE dwh_control.extract_watermarks SET last_extracted_at = %s", mark)


@contextmanager
def changed_migration(pipeline: Pipeline, wh: Conn) -> Iterator[None]:
    rows = wh.execute("SELECT version, checksum FROM dwh_control.schema_migrations").fetchall()
    wh.execute("UPDATE dwh_control.schema_migrations SET checksum = 'x'")
    try:
        yield
    finally:
        for version, checksum in rows:
            wh.execute("UPDATE dwh_control.schema_migrations SET checksum = %s WHERE version = %s",
                       (checksum, version))


def _exports_incomplete(report: dict[str, Any]) -> None:
    failed = gate(report, "exports_empty", "position_history")
    assert failed["numbers"] == {"files": 1, "complete_batches": 0, "incomplete_files": 1}
    assert "1 incomplete file(s)" in failed["detail"] and ".csv.gz" in failed["detail"]


def _exports_complete(report: dict[str, Any]) -> None:
    failed = gate(report, "exports_empty", "position_history")
    assert failed["numbers"] == {"files": 2, "complete_batches": 1, "incomplete_files": 0}
    assert "1 complete batch(es)" in failed["detail"] and "loads them" in failed["detail"]


def _parity_incremental(report: dict[str, Any]) -> None:
    numbers = gate(report, "parity", "position_history")["numbers"]
    assert numbers["source_rows"] - numbers["bronze_rows"] == 1


def _parity_snapshot(report: dict[str, Any]) -> None:
    numbers = gate(report, "parity", "devices")["numbers"]  # exact against the snapshot at load time
    assert numbers["source_rows_at_load"] == 80 and numbers["bronze_rows"] == 79


def _geometry(report: dict[str, Any]) -> None:
    assert 0 < gate(report, "geometry", "position_history")["numbers"]["mismatched"] < 200


def _accounting(report: dict[str, Any]) -> None:
    assert gate(report, "accounting", "extract_runs")["numbers"]["mismatched_runs"] == [4]


def _freshness(report: dict[str, Any]) -> None:
    numbers = gate(report, "freshness", "devices")["numbers"]
    assert numbers["seconds_since_load"] > 3 * 86400 - 60 and numbers["limit_seconds"] == 2 * 86400


def _failures(report: dict[str, Any]) -> None:
    failed = gate(report, "failures_24h", "devices")
    assert failed["numbers"]["failed_runs"] == 1 and "cannot connect" in failed["detail"]


def _growth(report: dict[str, Any]) -> None:
    grown = gate(report, "growth", "position_history")["numbers"]
    assert grown["source_rows"] - grown["bronze_rows"] == 10
    assert gate(report, "parity", "position_history")["status"] == "pass"


def _migrations(report: dict[str, Any]) -> None:
    assert {g["stage"] for g in report["gates"]} == {"pre-deploy"}  # stages can be checked on their own


BREAKS = {
    "data file without manifest": Break(data_file_without_manifest, {("exports_empty", "position_history")},
                                        _exports_incomplete),
    "complete batch left in exports": Break(complete_batch_left, {("exports_empty", "position_history")},
                                            _exports_complete),
    "deleted bronze row": Break(deleted_bronze_row, {("parity", "position_history")}, _parity_incremental),
    "deleted snapshot row": Break(deleted_snapshot_row, {("parity", "devices")}, _parity_snapshot),
    "moved geometry": Break(moved_geometry, {("geometry", "position_history")}, _geometry),
    "unaccounted run": Break(unaccounted_run, {("accounting", "extract_runs")}, _accounting),
    "stale snapshot": Break(stale_snapshot, {("freshness", "devices")}, _freshness),
    "failed run in 24 h": Break(failed_run, {("failures_24h", "devices")}, _failures),
    "bronze falling behind": Break(falling_behind, {("growth", "position_history"),
                                                    ("freshness", "position_history")}, _growth,
                                   ("--cadence", "10min")),
    "changed migration": Break(changed_migration, {("migrations", "dwh_control")}, _migrations,
                               ("--stage", "pre-deploy")),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_break_fails_exactly_its_gate(scenario: Pipeline, name: str) -> None:
    case = BREAKS[name]
    with scenario.wh() as wh, case.apply(scenario, wh):
        code, report = verify(scenario, *case.args)
        assert code == 1 and not report["ok"]
        assert gates(report, "fail") == case.fails, gates(report, "fail")
        case.check(report)


def test_status_and_verify_agree_on_a_data_file_without_manifest(scenario: Pipeline) -> None:
    """A data file without its manifest is not a pending batch, but it is not nothing either: `status`
    counts it as incomplete and verify's exports_empty fails with the same count."""
    with scenario.wh() as wh, data_file_without_manifest(scenario, wh):
        status = json.loads(scenario.cli("status", "--json", check=True).stdout)
        row = next(t for t in status["tables"] if t["table"] == "position_history")
        _, report = verify(scenario, "--stage", "first-run")
        numbers = gate(report, "exports_empty", "position_history")["numbers"]
        assert (row["pending_files"], row["incomplete_files"]) == (0, 1)
        assert (numbers["complete_batches"], numbers["incomplete_files"]) == (0, 1)
        assert "+1 incomplete" in scenario.cli("status", check=True).stdout


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


def test_status_and_runs_json_shapes(scenario: Pipeline) -> None:
    """`status --json` and `runs --json` keep their documented shapes (typed rows rendered at the edge)."""
    status = json.loads(scenario.cli("status", "--json", check=True).stdout)
    assert status["project"] == "fleet"
    assert list(status["tables"][0]) == ["table", "mode", "last_loaded_at", "lag_seconds", "watermark",
                                         "rows_loaded_last_run", "rows_skipped_last_run", "rows_invalid_last_run",
                                         "pending_files",
                                         "incomplete_files", "failures_24h", "last_status", "last_error"]
    devices = next(t for t in status["tables"] if t["table"] == "devices")
    assert devices["last_loaded_at"].endswith("+00:00") and devices["watermark"] is None
    assert devices["rows_loaded_last_run"] == 1 and devices["last_status"] == "loaded"

    runs = json.loads(scenario.cli("runs", "--json", check=True).stdout)["runs"]
    with scenario.wh() as wh:
        columns = [r[0] for r in wh.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'dwh_control.extract_runs'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]
    assert [r["run_id"] for r in runs] == [4, 3, 2, 1] and list(runs[0]) == columns
    assert runs[0]["run_started_at"].endswith("+00:00") and isinstance(runs[0]["holdback_seconds"], float | None)
    only = json.loads(scenario.cli("runs", "devices", "--limit", "1", "--json", check=True).stdout)["runs"]
    assert [(r["table_name"], r["run_id"]) for r in only] == [("devices", 4)]
    assert json.loads(scenario.cli("runs", "--failed", "--json", check=True).stdout)["runs"] == []
