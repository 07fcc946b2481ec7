"""Dagster definitions from a config, and materializations against a real PostgreSQL: parity, a CLI run
competing for the same table, and a blocking check that stops what reads its model."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

dg = pytest.importorskip("dagster", reason="the dagster extra is not installed: pip install \"bronzeline[dagster]\"")

from bronzeline.integrations.dagster import build_definitions  # noqa: E402 - after the skip
from tests.integration.pipeline import Pipeline, table_digest  # noqa: E402

SOURCE = """
CREATE TABLE tracksolid.positions (
    id bigint PRIMARY KEY, imei text NOT NULL, speed numeric(6,2), recorded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tracksolid.devices (imei text PRIMARY KEY, plate text);
"""
TABLES = ("  - {name: positions, from: tracksolid.positions, watermark: recorded_at, key: [id]}\n"
          "  - {name: devices, from: tracksolid.devices, mode: snapshot, key: [imei], cron: \"*/15 * * * *\"}\n")
MODELS = {
    "silver/fast.sql": "SELECT p.id, p.imei, d.plate, p.speed FROM bronze.positions p "
                       "LEFT JOIN bronze.devices d USING (imei) WHERE p.speed > 50",
    "gold/per_plate.sql": "SELECT plate, count(*) AS fixes FROM silver.fast GROUP BY plate",
}
PROPERTIES = """
models:
  - name: silver.fast
    columns:
      - name: imei
        data_tests: [not_null, {accepted_values: {values: [x], severity: warn}}]
  - name: gold.per_plate
    materialized: table
    key: [plate]
sources:
  - name: bronze.devices
    columns:
      - name: imei
        data_tests: [unique]
"""
FAILING = PROPERTIES.replace("data_tests: [not_null,",
                             'data_tests: [{expression_is_true: {expression: "speed < 0"}},')


def setup(pipe: Pipeline, properties: str = PROPERTIES, rows: int = 300) -> None:
    with pipe.src() as conn:
        conn.execute(SOURCE)
        conn.execute("INSERT INTO tracksolid.devices SELECT 'imei' || g, 'KDA ' || g FROM generate_series(0, 6) g")
    insert(pipe, 1, rows)
    root = pipe.tmp / "models"
    for name, text in MODELS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "properties.yml").write_text(properties)
    pipe.write_config(TABLES, "schedule: {cron: \"0 5 * * *\"}\nmodels: {path: models}\n")
    pipe.cli("migrate", check=True)
    time.sleep(0.15)  # the bound is held 100 ms below the source clock


def insert(pipe: Pipeline, first: int, count: int) -> None:
    with pipe.src() as conn:
        conn.execute("INSERT INTO tracksolid.positions (id, imei, speed) SELECT g, 'imei' || (g %% 7), "
                     "(g %% 120)::numeric FROM generate_series(%s::int, %s::int) g", (first, first + count - 1))


def definitions(pipe: Pipeline) -> Any:
    return build_definitions(pipe.config_path, env=pipe.environ())


def materialize(defs: Any, **options: Any) -> Any:
    return dg.materialize(list(defs.assets), instance=dg.DagsterInstance.ephemeral(), **options)


def key(text: str) -> Any:
    return dg.AssetKey(text.split("."))


def test_definitions_from_a_config(pipeline: Pipeline) -> None:
    setup(pipeline, rows=1)
    repo = definitions(pipeline).get_repository_def()
    assets = repo.assets_defs_by_key
    assert set(assets) == {key("bronze.positions"), key("bronze.devices"), key("silver.fast"), key("gold.per_plate")}
    group = {k: a.group_names_by_key[k] for k, a in assets.items()}
    assert group == {key("bronze.positions"): "source", key("bronze.devices"): "source",
                     key("silver.fast"): "silver", key("gold.per_plate"): "gold"}
    deps = {k: set(a.asset_deps[k]) for k, a in assets.items()}
    assert deps[key("silver.fast")] == {key("bronze.positions"), key("bronze.devices")}
    assert deps[key("gold.per_plate")] == {key("silver.fast")}
    assert deps[key("bronze.positions")] == set()
    checks = {(k.to_user_string(), c.name): c.blocking for k, a in assets.items() for c in a.check_specs}
    assert checks == {("silver/fast", "not_null_imei"): True, ("silver/fast", "accepted_values_imei"): False,
                      ("bronze/devices", "unique_imei"): True}
    schedules = {s.cron_schedule: s for s in repo.schedule_defs}
    assert set(schedules) == {"0 5 * * *", "*/15 * * * *"}
    assert {s.execution_timezone for s in schedules.values()} == {"Africa/Nairobi"}
    every_15 = repo.get_job(schedules["*/15 * * * *"].job_name)
    assert every_15.asset_layer.selected_asset_keys == {key("bronze.devices")}
    daily = repo.get_job(schedules["0 5 * * *"].job_name)  # tables on schedule.cron and the models
    assert daily.asset_layer.selected_asset_keys == {key("bronze.positions"), key("silver.fast"),
                                                     key("gold.per_plate")}


def test_materialize_everything_with_parity(pipeline: Pipeline) -> None:
    setup(pipeline)
    result = materialize(definitions(pipeline))
    assert result.success
    with pipeline.src() as src, pipeline.wh() as wh:
        for table in ("positions", "devices"):
            assert table_digest(wh, f"bronze.{table}") == table_digest(src, f"tracksolid.{table}")
        expected = src.execute("SELECT d.plate, count(*) FROM tracksolid.positions p LEFT JOIN tracksolid.devices d "
                               "USING (imei) WHERE speed > 50 GROUP BY 1 ORDER BY 1").fetchall()
        assert wh.execute("SELECT plate, fixes FROM gold.per_plate ORDER BY 1").fetchall() == expected
        runs = {r[0]: r[1:] for r in wh.execute("SELECT table_name, status, run_id, rows_loaded, csv_path "
                                                 "FROM dwh_control.extract_runs").fetchall()}
        built = wh.execute("SELECT model, status FROM dwh_control.model_runs ORDER BY 1").fetchall()
        checks = wh.execute("SELECT relation, check_name, status FROM dwh_control.check_results ORDER BY 1, 2"
                            ).fetchall()
    assert {t: r[0] for t, r in runs.items()} == {"positions": "loaded", "devices": "loaded"}  # one run each
    assert built == [("gold.per_plate", "built"), ("silver.fast", "built")]
    assert ("bronze.devices", "unique", "pass") in checks and ("silver.fast", "not_null", "pass") in checks
    # the materialization's metadata is the ledger's
    meta = result.asset_materializations_for_node("bronze__positions")[0].metadata
    _, run_id, rows, path = runs["positions"]
    assert (meta["rows_loaded"].value, meta["run_id"].value, meta["status"].value) == (rows, run_id, "loaded")
    assert rows == 300 and meta["batch_file"].value == path
    assert meta["window_end"].value is not None
    evaluations = {(e.asset_key.to_user_string(), e.check_name): (e.passed, e.severity.value)
                   for e in result.get_asset_check_evaluations()}
    assert evaluations == {("bronze/devices", "unique_imei"): (True, "WARN"),
                           ("silver/fast", "not_null_imei"): (True, "WARN"),
                           ("silver/fast", "accepted_values_imei"): (False, "WARN")}


def test_a_competing_cli_run_and_dagster_skip_not_double(pipeline: Pipeline) -> None:
    """The CLI holds positions' lock (its extract waits on a source lock); Dagster's materialization of
    positions meanwhile skips, with metadata saying so; once released, both runs' rows add up to the
    source exactly once — nothing doubled, nothing lost, while a writer keeps inserting."""
    setup(pipeline)
    defs = definitions(pipeline)
    with pipeline.src() as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE tracksolid.positions IN ACCESS EXCLUSIVE MODE")
        cli = subprocess.Popen([sys.executable, "-m", "bronzeline.cli", "-c", str(pipeline.config_path), "run",
                                "positions"], env=pipeline.environ(), cwd=pipeline.tmp, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for_lock_wait(pipeline)
            result = materialize(defs, selection=[key("bronze.positions"), key("silver.fast")])
            assert result.success  # a skip is not a failure
            assert result.asset_materializations_for_node("bronze__positions") == []  # nothing claimed
            assert result.asset_materializations_for_node("silver__fast") == []  # waits for the next run
            [seen] = result.asset_observations_for_node("bronze__positions")
            assert seen.metadata["skipped"].value == "lock held"
        finally:
            blocker.execute("COMMIT")
        out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert "positions: loaded 300 of 300 rows" in out
    insert(pipeline, 301, 50)  # a writer went on meanwhile
    time.sleep(0.15)
    assert materialize(defs, selection=[key("bronze.positions")]).success
    with pipeline.src() as src, pipeline.wh() as wh:
        assert table_digest(wh, "bronze.positions") == table_digest(src, "tracksolid.positions")
        runs = wh.execute("SELECT status, rows_loaded, rows_skipped FROM dwh_control.extract_runs "
                          "WHERE table_name = 'positions' ORDER BY run_id").fetchall()
    assert runs == [("loaded", 300, 0), ("loaded", 50, 0)]  # no run row for the skip; no row read twice


def _wait_for_lock_wait(pipe: Pipeline) -> None:
    """Until the CLI's extract waits on the source table's lock (it holds bronzeline's table lock then)."""
    deadline = time.monotonic() + 30
    with pipe.src() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND wait_event_type = 'Lock'").fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the CLI run never reached the source table")


def test_a_failing_blocking_check_stops_the_downstream_model(pipeline: Pipeline) -> None:
    setup(pipeline, properties=FAILING)
    result = materialize(definitions(pipeline), raise_on_error=False)
    evaluations = {(e.asset_key.to_user_string(), e.check_name): (e.passed, e.severity.value)
                   for e in result.get_asset_check_evaluations()}
    assert evaluations[("silver/fast", "expression_is_true_imei")] == (False, "ERROR")
    assert not result.success  # Dagster fails the step whose blocking check failed
    done = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}
    assert done == {"bronze/positions", "bronze/devices"}  # silver.fast was not published; gold never ran
    with pipeline.wh() as wh:
        built = wh.execute("SELECT model, status FROM dwh_control.model_runs ORDER BY 1").fetchall()
        exists = wh.execute("SELECT to_regclass('gold.per_plate') IS NOT NULL, "
                            "to_regclass('silver.fast') IS NOT NULL").fetchone()
    assert built == [("silver.fast", "failed")]  # gold.per_plate never started: Dagster did not run it
    assert exists == (False, False)  # the failing model was not published either


def test_transient_failures_go_back_to_dagster_terminal_ones_do_not(pipeline: Pipeline) -> None:
    """After bronzeline's own attempts, a source that does not answer asks Dagster for a retry of the
    step; a source that answers and refuses the login fails the step with no retry."""
    setup(pipeline, rows=5)
    pipeline.write_config(TABLES, "retries: {attempts: 1, max_backoff_seconds: 0}\nmodels: {path: models}\n")
    down = {**pipeline.environ(), "SOURCE_DSN": pipeline.source_dsn.replace("port=54", "port=1")}
    refused = {**pipeline.environ(), "SOURCE_DSN": pipeline.source_dsn.replace("password=", "password=x")}
    for env, retried in ((down, True), (refused, False)):
        defs = build_definitions(pipeline.config_path, env=env)
        result = materialize(defs, selection=[key("bronze.positions")], raise_on_error=False)
        assert not result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == (1 if retried else 0), env["SOURCE_DSN"]
    with pipeline.wh() as wh:
        failed = wh.execute("SELECT count(*) FROM dwh_control.extract_runs WHERE status = 'failed'").fetchone()
        loaded = wh.execute("SELECT count(*) FROM bronze.positions").fetchone()
    assert loaded == (0,) and failed is not None and failed[0] >= 1  # every attempt is in the ledger
