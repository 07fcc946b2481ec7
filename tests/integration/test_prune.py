"""`bronzeline prune`: blob.retention deletes old batches, never one whose rows are not loaded."""

from __future__ import annotations

import json
import time

from tests.integration.pipeline import Pipeline
from tests.integration.test_core import TABLES, assert_parity, insert_positions, setup

RETENTION = "  retention: {processed_days: 7, failed_days: 3}\n"


def age_runs(pipeline: Pipeline, days: int) -> None:
    with pipeline.wh() as conn:
        conn.execute("UPDATE dwh_control.extract_runs SET run_started_at = now() - make_interval(days => %s), "
                     "run_finished_at = now() - make_interval(days => %s)", (days, days))


def crash_after_upload(pipeline: Pipeline) -> str:
    killed = pipeline.cli("run", "position_history", env={"BRONZELINE_CRASH_AT": "uploaded"})
    assert killed.returncode != 0
    [name] = [n for n in pipeline.files("exports", "position_history") if n.endswith(".csv.gz")]
    return name


def test_prune_keeps_what_is_not_loaded(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    pipeline.write_config(TABLES, RETENTION)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)  # run 1 (position_history) and run 2 (devices): processed/
    loaded = pipeline.files("processed", "position_history")
    # a batch refused for not matching its manifest: failed/, and its window is not loaded yet
    with pipeline.src() as conn:
        insert_positions(conn, 50, start=100)
    time.sleep(0.15)
    refused = crash_after_upload(pipeline)
    path = pipeline.blob / "exports" / "position_history" / refused
    path.write_bytes(path.read_bytes()[:20])
    assert pipeline.cli("run", "position_history").returncode == 1
    assert refused in pipeline.files("failed", "position_history")
    # a complete batch waiting in exports/ (its run is `uploaded`)
    time.sleep(0.15)
    pending = crash_after_upload(pipeline)
    with pipeline.wh() as conn:  # the devices run's row says it is not loaded (as if its load were undone)
        conn.execute("UPDATE dwh_control.extract_runs SET status = 'failed' WHERE table_name = 'devices'")
    devices = pipeline.files("processed", "devices")

    young = pipeline.cli("prune", "--dry-run", check=True).stdout
    assert "prune: would delete 0 file(s)" in young

    age_runs(pipeline, 10)
    before = {f: pipeline.files(f, t) for f in ("exports", "processed", "failed") for t in ("position_history",)}
    dry = pipeline.cli("prune", "--dry-run", check=True).stdout
    assert "prune: would delete 2 file(s)" in dry and all(f"would delete file://{pipeline.blob}/processed/"
                                                          f"position_history/{n}" in dry for n in loaded)
    assert "kept processed/devices run 2: run 2 is failed, not loaded" in dry
    assert "kept failed/position_history run 3: its window has not been loaded since" in dry
    assert {f: pipeline.files(f, "position_history") for f in before} == before  # a dry run deletes nothing

    report = json.loads(pipeline.cli("prune", "--json", check=True).stdout)
    assert report["deleted_files"] == 2 and not report["dry_run"]
    assert pipeline.files("processed", "position_history") == []
    assert pipeline.files("processed", "devices") == devices  # its run is not loaded: kept
    assert pending in pipeline.files("exports", "position_history")  # exports/ is never pruned
    assert refused in pipeline.files("failed", "position_history")

    # the next run loads the pending batch, whose window covers the refused one's: now it may go
    time.sleep(0.15)
    pipeline.cli("run", "position_history", check=True)
    age_runs(pipeline, 10)
    out = pipeline.cli("prune", check=True).stdout
    assert f"deleted file://{pipeline.blob}/failed/position_history/{refused}" in out
    assert pipeline.files("failed", "position_history") == []
    assert pipeline.files("processed", "position_history") == []  # the pending batch, loaded 10 days ago
    assert_parity(pipeline)  # nothing pruned was needed


def test_without_retention_nothing_is_pruned(pipeline: Pipeline) -> None:
    setup(pipeline, rows=10)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    age_runs(pipeline, 1000)
    proc = pipeline.cli("prune", check=True)
    assert "nothing to prune" in proc.stderr and "deleted 0 file(s)" in proc.stdout
    assert len(pipeline.files("processed", "position_history")) == 2
