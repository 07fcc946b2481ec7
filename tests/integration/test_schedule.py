"""`bronzeline schedule`: cron in the config's time zone, --once, SIGTERM, one run per table at a time."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.pipeline import Pipeline
from tests.integration.test_core import assert_parity, insert_positions, setup

SLOW = """
CREATE TABLE tracksolid.slow_things (id int PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.slow_things (id) SELECT g FROM generate_series(1, 150) g;
-- the extract waits while the test holds advisory lock 4242: a run the test can hold mid-extract
CREATE FUNCTION tracksolid.gate(id int) RETURNS boolean LANGUAGE sql VOLATILE
    AS $$ SELECT true FROM (SELECT pg_advisory_xact_lock_shared(4242)) AS wait $$;
"""
SLOW_TABLE = """\
  - name: slow_things
    query: "SELECT id, recorded_at FROM tracksolid.slow_things WHERE tracksolid.gate(id)"
    watermark: recorded_at
    key: [id]
"""


def start(pipeline: Pipeline, *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bronzeline.cli", "-c", str(pipeline.config_path), "schedule", *args],
        env=pipeline.environ(), cwd=pipeline.tmp, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def runs(pipeline: Pipeline, table: str) -> list[tuple[Any, ...]]:
    with pipeline.wh() as conn:
        return conn.execute("SELECT status, rows_loaded, attempts FROM dwh_control.extract_runs "
                            "WHERE table_name = %s ORDER BY run_id", (table,)).fetchall()


def wait_for(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_once_runs_what_is_due_then_nothing(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    pipeline.write_config(pipeline.tables_yaml, "schedule:\n  cron: \"0 5,8,11,14,17,20,23 * * *\"\n")
    pipeline.cli("migrate", check=True)
    first = pipeline.cli("schedule", "--once", check=True)
    assert "position_history: loaded 100 of 100 rows" in first.stderr and "devices: loaded 80" in first.stderr
    assert "+03:00 " in first.stderr  # log lines carry the time in the config's zone (Nairobi)
    assert_parity(pipeline)
    # both ran after the latest slot: nothing is due until the next one
    again = pipeline.cli("schedule", "--once", check=True)
    assert "nothing due" in again.stderr and "loaded" not in again.stderr
    # without a cron, the daemon refuses to start and says what to do; --once runs every table
    pipeline.write_config(pipeline.tables_yaml)
    proc = pipeline.cli("schedule")
    assert proc.returncode == 1 and "schedule.cron" in proc.stderr and "--once" in proc.stderr
    assert "position_history: loaded 0 of 0" in pipeline.cli("schedule", "--once", check=True).stderr


def test_daemon_keeps_up_with_a_writing_source_and_stops_on_sigterm(pipeline: Pipeline) -> None:
    setup(pipeline, rows=200)
    pipeline.write_config(pipeline.tables_yaml, "schedule:\n  cron: \"* * * * * */2\"\n")  # every 2 s
    pipeline.cli("migrate", check=True)
    stop = threading.Event()

    def write() -> None:
        n = 200
        with psycopg.connect(pipeline.source_admin, autocommit=True) as conn:
            while not stop.is_set():
                insert_positions(conn, 20, start=n)
                n += 20
                time.sleep(0.1)

    writer = threading.Thread(target=write)
    writer.start()
    log = pipeline.tmp / "schedule.log"
    proc = start(pipeline, log=log)
    try:
        wait_for(lambda: len([r for r in runs(pipeline, "position_history") if r[0] == "loaded"]) >= 3)
    finally:
        stop.set()
        writer.join()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text
    assert "SIGTERM: stopping after the current table" in text and text.rstrip().endswith("stopped")
    assert "on '* * * * * */2' (Africa/Nairobi)" in text
    assert text.count("position_history: run started") >= 3
    time.sleep(0.15)
    pipeline.run()
    assert_parity(pipeline)
    history = runs(pipeline, "position_history")
    assert {r[0] for r in history} == {"loaded"}  # every run finished, nothing left half-done


def test_sigterm_lets_the_current_table_finish_and_others_skip_it(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(SLOW)
    pipeline.write_config(SLOW_TABLE, "schedule:\n  cron: \"0 5 * * *\"\n")
    time.sleep(0.15)
    pipeline.cli("migrate", check=True)
    log = pipeline.tmp / "schedule.log"
    gate = pipeline.src()
    gate.execute("SELECT pg_advisory_lock(4242)")
    proc = start(pipeline, log=log)  # never ran: it catches up at once
    with pipeline.src() as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                      "'bronzeline%' AND query LIKE 'COPY%' AND wait_event_type = 'Lock'"
                                      ).fetchone() == (1,))
    # the run under way counts as this slot's: a cron-driven `schedule --once` finds nothing due
    assert "nothing due" in pipeline.cli("schedule", "--once", check=True).stderr
    # and any other run of the table meanwhile finds its lock held, and skips it (not a failure)
    other = pipeline.cli("run", "slow_things")
    assert other.returncode == 0, other.stderr
    assert "slow_things: another run holds this table's lock; skipped" in other.stderr
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM" in log.read_text())
    time.sleep(0.3)
    assert proc.poll() is None  # still extracting: it waits for the table to finish
    gate.close()  # releases the lock: the extract goes on
    code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text
    assert "slow_things: loaded 150 of 150 rows" in text  # the run under way finished
    assert text.index("SIGTERM") < text.index("slow_things: loaded")
    assert runs(pipeline, "slow_things") == [("loaded", 150, 1)]


SCHEDULED_MODELS = {
    "silver/devices.sql": "SELECT imei, plate FROM bronze.devices",
    "silver/fixes.sql": "SELECT id, imei, speed FROM bronze.position_history",
    "gold/fixes_per_device.sql": "SELECT f.imei, count(*) AS fixes FROM silver.fixes f JOIN silver.devices d "
                                 "USING (imei) GROUP BY f.imei",
    "properties.yml": """\
models:
  - name: silver.devices
    materialized: table
  - name: silver.fixes
    materialized: table
    data_tests: [{row_count: {max: 10}}]
  - name: gold.fixes_per_device
    materialized: table
""",
}


def test_once_builds_the_models_after_the_loads_and_a_build_error_stops_nothing(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    pipeline.write_config(pipeline.tables_yaml, "models: {path: models}\n")
    for name, text in SCHEDULED_MODELS.items():
        path = pipeline.tmp / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pipeline.cli("migrate", check=True)
    first = pipeline.cli("schedule", "--once", check=True)  # a failed model is not a failed load
    log = first.stderr
    assert log.index("position_history: loaded 100 of 100 rows") < log.index("models: build started")
    assert re.search(r"silver\.devices: built 80 rows in \d+\.\d\ds", log), log
    assert re.search(r"silver\.fixes: failed in \d+\.\d\ds: ", log), log
    assert "silver.fixes: check row_count failed" in log
    assert "gold.fixes_per_device: blocked: " in log and "models: 1 of 3 built; see the failures above" in log
    with pipeline.wh() as conn:
        ledger = dict(conn.execute("SELECT DISTINCT ON (model) model, status FROM dwh_control.model_runs "
                                   "ORDER BY model, build_id DESC").fetchall())
    assert ledger == {"silver.devices": "built", "silver.fixes": "failed", "gold.fixes_per_device": "blocked"}

    # a model file the project cannot read: the loads run, the error is one line, the exit code is the loads'
    (pipeline.tmp / "models" / "silver" / "broken.sql").write_text("SELECT FROM WHERE (")
    second = pipeline.cli("schedule", "--once", check=True)
    assert "position_history: loaded 0 of 0 rows" in second.stderr
    assert re.search(r"models: error: broken\.sql \(silver\.broken\)", second.stderr), second.stderr
    assert "Traceback" not in second.stderr

    # schedule_build: false leaves the models to `bronzeline build`
    pipeline.write_config(pipeline.tables_yaml, "models: {path: models, schedule_build: false}\n")
    third = pipeline.cli("schedule", "--once", check=True)
    assert "position_history: loaded 0 of 0 rows" in third.stderr and "models:" not in third.stderr
