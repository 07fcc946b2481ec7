"""Models everywhere a user looks: `status` (table and --json), `verify`'s steady gates, and `serve`
(/api/status, /metrics, the page's model graph), read from the models ledger and the project's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bronzeline.observe.server import create_app
from bronzeline.warehouse.model_ledger import ModelLedger
from tests.integration.pipeline import Pipeline
from tests.integration.test_core import TABLES, setup

MODELS_YAML = "models:\n  path: models\n  schedule_build: false\n"
FILES = {
    "silver/devices_clean.sql": "SELECT imei, plate FROM bronze.devices",
    "silver/fixes.sql": "SELECT id, imei, speed FROM bronze.position_history",
    "gold/device_speed.sql": "SELECT d.imei, max(f.speed) AS top_speed\nFROM silver.fixes f\n"
                             "JOIN silver.devices_clean d USING (imei)\nGROUP BY d.imei",
    "reporting/plates.sql": "SELECT plate FROM silver.devices_clean",
    "properties.yml": """\
models:
  - name: silver.devices_clean
    columns:
      - name: imei
        data_tests: [unique]
      - name: plate
        data_tests: [{not_null: {severity: warn}}]
  - name: silver.fixes
    materialized: table
    columns:
      - name: speed
        data_tests: [{accepted_range: {min_value: 0, max_value: 250}}]
  - name: gold.device_speed
    materialized: table
sources:
  - name: bronze.position_history
    columns:
      - name: imei
        data_tests: [not_null]
""",
}


def write_models(folder: Path) -> None:
    for name, text in FILES.items():
        path = folder / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def record_builds(conn: psycopg.Connection[Any]) -> None:
    """A history in the ledger: devices_clean built (a warn check failing), fixes built once then failed on
    an error check (5 speeds out of range), device_speed built then blocked by it; plates never built."""
    ledger = ModelLedger(conn, "dwh_control")

    def check(build: int | None, name: str, relation: str, column: str, status: str, failing: int, total: int,
              severity: str = "error") -> None:
        ledger.record_check(build_id=build, check_name=name, relation=relation, column=column, severity=severity,
                            status=status, failing_rows=failing, total_rows=total, sample=[], query="SELECT 1")

    check(None, "not_null", "bronze.position_history", "imei", "pass", 0, 800)
    first = ledger.start_build("silver.fixes", "table")
    check(first, "accepted_range", "silver.fixes", "speed", "pass", 0, 500)
    ledger.finish_build(first, "built", rows=500)
    devices = ledger.start_build("silver.devices_clean", "view")
    check(devices, "unique", "silver.devices_clean", "imei", "pass", 0, 80)
    check(devices, "not_null", "silver.devices_clean", "plate", "warn", 3, 80, "warn")
    ledger.finish_build(devices, "built", rows=80)
    speed = ledger.start_build("gold.device_speed", "table")
    ledger.finish_build(speed, "built", rows=80)
    failed = ledger.start_build("silver.fixes", "table")
    check(failed, "accepted_range", "silver.fixes", "speed", "fail", 5, 800)
    ledger.finish_build(failed, "failed", rows=800, error="accepted_range(speed) failed: 5 of 800 rows")
    ledger.record_blocked("gold.device_speed", "table", "blocked by silver.fixes")


def with_models(pipeline: Pipeline, tables: str = TABLES) -> None:
    pipeline.write_config(tables, MODELS_YAML)
    write_models(pipeline.tmp)


@pytest.fixture
def built(pipeline: Pipeline) -> Pipeline:
    setup(pipeline, rows=50)
    with_models(pipeline)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        record_builds(conn)
    return pipeline


def by_model(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["model"]: r for r in rows}


def test_status_shows_each_model_s_latest_build_and_failed_checks(built: Pipeline) -> None:
    status = json.loads(built.cli("status", "--json", check=True).stdout)
    assert list(status) == ["project", "tables", "models", "slots", "api"]
    assert list(status["tables"][0]) == ["table", "mode", "last_loaded_at", "lag_seconds", "watermark",
                                         "rows_loaded_last_run", "rows_skipped_last_run", "rows_invalid_last_run",
                                         "pending_files",
                                         "incomplete_files", "failures_24h", "last_status", "last_error"]
    models = by_model(status["models"])
    assert set(models) == {"silver.fixes", "silver.devices_clean", "gold.device_speed"}  # plates: never built
    assert list(models["silver.fixes"]) == ["model", "materialized", "status", "last_built_at", "rows",
                                            "failed_checks", "warned_checks"]
    fixes, devices, speed = models["silver.fixes"], models["silver.devices_clean"], models["gold.device_speed"]
    # a failed model still publishes its last good build: those are its rows and its time
    assert (fixes["status"], fixes["rows"], fixes["failed_checks"], fixes["warned_checks"]) == ("failed", 500, 1, 0)
    assert (devices["status"], devices["rows"], devices["failed_checks"], devices["warned_checks"]) == \
        ("built", 80, 0, 1)
    assert (speed["status"], speed["materialized"], speed["rows"]) == ("blocked", "table", 80)
    with built.wh() as conn:
        last = conn.execute("SELECT max(finished_at) FROM dwh_control.model_runs WHERE model = 'silver.fixes' "
                            "AND status = 'built'").fetchone()
    assert last is not None and fixes["last_built_at"] == last[0].isoformat()
    # dependencies first, then by name: the same order in every process (graphlib's is not)
    assert [m["model"] for m in status["models"]] == ["silver.devices_clean", "silver.fixes", "gold.device_speed"]

    text = built.cli("status", check=True).stdout
    assert "models" in text and "silver.fixes" in text and "blocked" in text
    assert "gold.device_speed: blocked: blocked by silver.fixes" in text
    assert "silver.fixes: failed: accepted_range(speed) failed: 5 of 800 rows" in text


def test_without_models_or_before_a_build_status_says_nothing_of_models(pipeline: Pipeline) -> None:
    setup(pipeline, rows=20)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    for configure in (lambda: None, lambda: with_models(pipeline)):  # no models: section, then no build yet
        configure()
        assert json.loads(pipeline.cli("status", "--json", check=True).stdout)["models"] == []
        text = pipeline.cli("status", check=True).stdout
        assert "position_history" in text and "model" not in text
    # a model file the project cannot read: the ledger is still shown, and the error is told
    with pipeline.wh() as conn:
        record_builds(conn)
    (pipeline.tmp / "models" / "silver" / "broken.sql").write_text("SELECT FROM WHERE (")
    proc = pipeline.cli("status")
    assert proc.returncode == 0, proc.stderr
    assert "silver.fixes" in proc.stdout and "models:" in proc.stderr and "broken.sql" in proc.stderr


def test_verify_gates_the_latest_error_checks_of_each_model(built: Pipeline) -> None:
    proc = built.cli("verify", "--json", "--stage", "steady")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and not report["ok"]
    gates = {(g["gate"], g["subject"]): g for g in report["gates"]}
    bad = gates[("model_checks", "silver.fixes")]
    assert bad["status"] == "fail" and "accepted_range(speed) (5 of 800 rows" in bad["detail"]
    assert bad["numbers"]["failing_rows"] == {"accepted_range(speed)": 5}
    good = gates[("model_checks", "silver.devices_clean")]  # its failing check is warn-severity
    assert good["status"] == "pass" and good["numbers"] == {"error_checks": 1, "checked": 1,
                                                             "failing_rows": {"unique(imei)": 0}}
    assert gates[("source_checks", "bronze.position_history")]["status"] == "pass"
    assert ("model_checks", "gold.device_speed") not in gates  # no checks: no gate
    assert [g["status"] for g in report["gates"] if g["status"] == "fail"] == ["fail"]

    # `bronzeline test` (or the next build) passing the check clears the gate
    with built.wh() as conn:
        ModelLedger(conn, "dwh_control").record_check(
            build_id=None, check_name="accepted_range", relation="silver.fixes", column="speed", severity="error",
            status="pass", failing_rows=0, total_rows=800, sample=[], query="SELECT 1")
    code = built.cli("verify", "--json", "--stage", "steady")
    assert code.returncode == 0, code.stdout


def test_verify_skips_models_when_there_are_none(pipeline: Pipeline) -> None:
    setup(pipeline, rows=20)
    pipeline.write_config(TABLES, MODELS_YAML)
    (pipeline.tmp / "models").mkdir()
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    report = json.loads(pipeline.cli("verify", "--json", "--stage", "steady", check=True).stdout)
    skipped = [g for g in report["gates"] if g["gate"] == "model_checks"]
    assert [(g["subject"], g["status"]) for g in skipped] == [("models", "skip")]
    assert "no models" in skipped[0]["detail"]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_serve_shows_models_in_api_metrics_and_the_graph(built: Pipeline) -> None:
    from tests.integration.test_serve import get, running

    with running(create_app(built.config())) as url:
        api = get(f"{url}/api/status").json()
        cli = json.loads(built.cli("status", "--json", check=True).stdout)
        assert api["models"] == cli["models"] and len(api["models"]) == 3

        samples = metric_samples(get(f"{url}/metrics").text)

        def metric(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert metric("bronzeline_model_status", model="silver.fixes", status="failed") == 1
        assert metric("bronzeline_model_status", model="silver.fixes", status="built") == 0
        assert metric("bronzeline_model_status", model="gold.device_speed", status="blocked") == 1
        assert metric("bronzeline_model_rows", model="silver.devices_clean") == 80
        assert metric("bronzeline_model_last_built_timestamp_seconds", model="silver.fixes") > 1.7e9
        assert metric("bronzeline_check_failing_rows", relation="silver.fixes", check="accepted_range",
                      column="speed") == 5
        assert metric("bronzeline_check_status", relation="silver.fixes", check="accepted_range", column="speed",
                      status="fail") == 1
        assert metric("bronzeline_check_status", relation="silver.devices_clean", check="not_null", column="plate",
                      status="warn") == 1
        assert metric("bronzeline_check_status", relation="bronze.position_history", check="not_null",
                      column="imei", status="pass") == 1
        assert not any(name == "bronzeline_model_status" and ("model", "reporting.plates") in labels
                       for name, labels in samples)

        html = get(f"{url}/").text
    assert '<svg class="model-graph"' in html and "https://" not in html.replace("http://www.w3.org", "")
    assert '<g class="node failed" data-model="silver.fixes">' in html
    assert '<g class="node blocked" data-model="gold.device_speed">' in html
    assert '<g class="node built" data-model="silver.devices_clean">' in html
    assert '<g class="node never" data-model="reporting.plates">' in html
    assert '<g class="node source" data-model="bronze.devices">' in html
    # arrows from what a model reads; red out of a failed model
    assert 'class="edge bad" data-from="silver.fixes" data-to="gold.device_speed"' in html
    assert 'class="edge" data-from="silver.devices_clean" data-to="reporting.plates"' in html
    assert "2 model(s) failed or blocked" in html
