"""Crash safety: SIGKILL at every step, and at random moments; the next run completes exactly."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from bronzeline.faults import POINTS
from tests.integration.pipeline import Pipeline, table_digest
from tests.integration.test_core import assert_parity, insert_positions, setup


def exports(pipeline: Pipeline) -> list[str]:
    return pipeline.files("exports", "position_history")


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_then_exact_parity(pipeline: Pipeline, point: str) -> None:
    setup(pipeline, rows=3000)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", "devices", check=True)
    with pipeline.src() as conn:
        insert_positions(conn, 2000, start=3000)  # a second batch: the first one already loaded
    killed = pipeline.cli("run", "position_history", env={"BRONZELINE_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    with pipeline.wh() as conn:
        status = conn.execute("SELECT status FROM dwh_control.extract_runs WHERE table_name = 'position_history' "
                              "ORDER BY run_id DESC LIMIT 1").fetchone()
    left = exports(pipeline)
    if point == "extract":
        assert status == ("extracting",)
        assert not any(n.endswith(".manifest.json") for n in left)  # no manifest: a dead extract
    elif point in ("uploaded", "load"):
        assert any(n.endswith(".manifest.json") for n in left)  # a complete batch waits
        with pipeline.wh() as conn:
            assert conn.execute("SELECT count(*) FROM bronze.position_history").fetchone() == (0,)
    else:
        assert status == ("loaded",)

    time.sleep(0.15)
    pipeline.cli("run", check=True)
    assert exports(pipeline) == []
    assert_parity(pipeline)
    with pipeline.wh() as conn:
        runs = conn.execute("SELECT status, rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs "
                            "WHERE table_name = 'position_history' ORDER BY run_id").fetchall()
    # every run is finished: loaded (and accounted) or failed, none left in between
    assert {r[0] for r in runs} <= {"loaded", "failed"}
    assert all(r[1] == r[2] + r[3] for r in runs if r[0] == "loaded")
    assert sum(r[2] for r in runs if r[0] == "loaded") == 5000  # each row inserted exactly once
    processed = pipeline.files("processed", "position_history")
    assert len([n for n in processed if n.endswith(".manifest.json")]) == len([r for r in runs if r[0] == "loaded"])


def test_sigkill_at_random_moments(pipeline: Pipeline) -> None:
    setup(pipeline, rows=0)
    pipeline.cli("migrate", check=True)
    rng = random.Random(7)
    total = 0
    for round_ in range(6):
        with pipeline.src() as conn:
            insert_positions(conn, 40_000, start=total)
        total += 40_000
        time.sleep(0.15)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bronzeline.cli", "-c", str(pipeline.config_path), "run"],
            env=pipeline.environ(), cwd=pipeline.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if round_ % 2:
            time.sleep(0.15)
            pipeline.cli("run", check=True)
    time.sleep(0.15)
    pipeline.cli("run", check=True)
    assert_parity(pipeline)
    with pipeline.wh() as conn:
        assert table_digest(conn, "bronze.position_history")[0] == total
        bad = conn.execute("SELECT count(*) FROM dwh_control.extract_runs WHERE status IN ('extracting', 'uploaded') "
                           "OR (status = 'loaded' AND rows_extracted <> rows_loaded + rows_skipped)").fetchone()
        assert bad == (0,)
