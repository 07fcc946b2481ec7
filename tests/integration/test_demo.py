"""`bronzeline demo` runs to completion on its embedded server, with no system PostgreSQL involved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in
            ("SOURCE_DSN", "WAREHOUSE_DSN", "BRONZELINE_CONFIG", "BRONZELINE_TEST_PG")}


def test_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bronzeline.cli", "demo", "--days", "0.5"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "position_history: loaded" in proc.stdout and "trips: loaded" in proc.stdout
    # the models are built after each run (the second time incrementally) and gold rows are shown
    assert proc.stdout.count("gold.daily_fleet_metrics: built") == 2, proc.stdout
    assert "reporting.fn_trips_for_map: built" in proc.stdout
    assert "gold.daily_fleet_metrics (the busiest vehicle-days)" in proc.stdout
    demo = tmp_path / "bronzeline-demo"
    assert (demo / "bronzeline.yml").is_file()
    processed = demo / "blob" / "fleet" / "processed" / "position_history"
    assert len(list(processed.glob("*.csv.gz"))) == 2  # two runs, two batch files
    assert not (demo / "pgdata").exists()  # the server is stopped and removed


def test_demo_keep_leaves_a_server_to_explore(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bronzeline.cli", "demo", "--keep", "--days", "0.2",
                           "--dir", str(tmp_path / "d")], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    dsn = next(line.split('"')[1] for line in lines if "the warehouse" in line and "psql" in line)
    stop = next(line.split("stop it with: ", 1)[1] for line in lines if "stop it with:" in line)
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM bronze.position_history").fetchone()
            assert row is not None and row[0] > 0
            bad = conn.execute("SELECT count(*) FROM dwh_control.extract_runs WHERE status <> 'loaded'").fetchone()
            assert bad == (0,)
        status = subprocess.run([sys.executable, "-m", "bronzeline.cli", "-c", str(tmp_path / "d" / "bronzeline.yml"),
                                 "status", "--json"], env=_env(), capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and '"position_history"' in status.stdout
    finally:
        subprocess.run(stop, shell=True, check=False, capture_output=True)
