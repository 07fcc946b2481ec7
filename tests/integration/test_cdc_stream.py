"""`bronzeline stream` end to end on a real slot: killed at random under a concurrent writer → parity row for
row and a complete history; SIGTERM → exit 0; a column added at the source; a dropped slot → a clear error →
`resync` → parity."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.integration.cdc_setup import cdc_pipeline, rows, waiting_in_slot
from tests.integration.pipeline import Pipeline, table_digest

DDL = """
CREATE TABLE tracksolid.devices (id int PRIMARY KEY, name text, odometer bigint, notes text);
INSERT INTO tracksolid.devices SELECT i, 'd' || i, i * 10, repeat('n', 3000) FROM generate_series(1, 200) i;
"""
YAML = "  - name: devices\n    from: tracksolid.devices\n    mode: cdc\n    key: [id]\n    history: true\n{extra}"


@pytest.fixture
def devices(pipeline: Pipeline, request: Any) -> Any:
    extra = getattr(request, "param", "")
    with cdc_pipeline(pipeline, DDL, ["devices"], YAML.format(extra=extra)) as pipe:
        yield pipe


def start_stream(pipe: Pipeline) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bronzeline.cli", "-c", str(pipe.config_path), "stream"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pipe.environ(),
                            cwd=pipe.tmp)


def writer(pipe: Pipeline, stop: threading.Event, counts: dict[str, int]) -> None:
    rng = random.Random(7)
    next_id = 1000
    with pipe.src() as conn:
        while not stop.is_set():
            with conn.transaction():
                for _ in range(rng.randint(1, 20)):
                    pick = rng.random()
                    if pick < 0.4:
                        conn.execute("INSERT INTO tracksolid.devices VALUES (%s, 'new', 0, repeat('t', 2500))",
                                     (next_id,))
                        next_id += 1
                        counts["I"] += 1
                    elif pick < 0.8:  # notes (TOASTed) unchanged
                        cur = conn.execute("UPDATE tracksolid.devices SET odometer = odometer + 1 WHERE id = "
                                           "(SELECT id FROM tracksolid.devices ORDER BY random() LIMIT 1)")
                        counts["U"] += cur.rowcount
                    else:
                        cur = conn.execute("DELETE FROM tracksolid.devices WHERE id = "
                                           "(SELECT id FROM tracksolid.devices ORDER BY random() LIMIT 1)")
                        counts["D"] += cur.rowcount
            time.sleep(0.005)


def wait_parity(pipe: Pipeline, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with pipe.src() as src, pipe.wh() as wh:
            if table_digest(src, "tracksolid.devices") == table_digest(wh, "bronze.devices"):
                return
        assert time.monotonic() < deadline, "bronze did not reach the source's state"
        time.sleep(0.2)


def test_stream_killed_at_random_under_a_writer_then_parity(devices: Pipeline) -> None:
    devices.cli("run", check=True)  # the first load: changes from here on are in the history
    counts = {"I": 0, "U": 0, "D": 0}
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(devices, stop, counts))
    thread.start()
    rng = random.Random(11)
    try:
        for _ in range(3):
            proc = start_stream(devices)
            time.sleep(rng.uniform(0.8, 2.0))
            proc.kill()
            proc.wait()
    finally:
        stop.set()
        thread.join()
    proc = start_stream(devices)
    try:
        wait_parity(devices)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    with devices.wh() as wh:
        history = dict(rows(wh, "SELECT op, count(*) FROM bronze.devices__changes GROUP BY op"))
        runs = rows(wh, "SELECT status, rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs")
        assert rows(wh, "SELECT count(*) FROM bronze.devices WHERE notes IS NULL") == [(0,)]  # TOAST never NULL
    assert history == {k: v for k, v in counts.items() if v}  # every change once in the history
    assert all(r[1] == r[2] + r[3] for r in runs if r[0] == "loaded")
    with devices.src() as src:
        assert waiting_in_slot(src) == 0  # caught up: the slot moved on past every applied change


@pytest.mark.parametrize("devices", ["    schema_evolution: add_columns\n"], indirect=True)
def test_added_column_follows_with_add_columns(devices: Pipeline) -> None:
    devices.cli("run", check=True)
    with devices.src() as conn:
        conn.execute("ALTER TABLE tracksolid.devices ADD COLUMN colour text")
        conn.execute("UPDATE tracksolid.devices SET colour = 'red' WHERE id <= 3")
    devices.cli("run", check=True)
    with devices.src() as src, devices.wh() as wh:
        assert table_digest(src, "tracksolid.devices") == table_digest(wh, "bronze.devices")
        assert rows(wh, "SELECT count(*) FROM bronze.devices__changes WHERE colour = 'red'") == [(3,)]


def test_added_column_without_evolution_stops_with_the_statement(devices: Pipeline) -> None:
    devices.cli("run", check=True)
    with devices.src() as conn:
        conn.execute("ALTER TABLE tracksolid.devices ADD COLUMN colour text")
        conn.execute("UPDATE tracksolid.devices SET colour = 'red' WHERE id = 1")
    failed = devices.cli("run")
    assert failed.returncode == 1
    assert "ALTER TABLE bronze.devices ADD COLUMN colour text" in failed.stderr
    with devices.wh() as wh:
        wh.execute("ALTER TABLE bronze.devices ADD COLUMN colour text")
        wh.execute("ALTER TABLE bronze.devices__changes ADD COLUMN colour text")
    devices.cli("run", check=True)
    with devices.src() as src, devices.wh() as wh:
        assert table_digest(src, "tracksolid.devices") == table_digest(wh, "bronze.devices")


def test_dropped_slot_clear_error_then_resync_to_parity(devices: Pipeline) -> None:
    devices.cli("run", check=True)
    with devices.src() as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE database = current_database()")
        conn.execute("DELETE FROM tracksolid.devices WHERE id <= 20")
        conn.execute("UPDATE tracksolid.devices SET name = 'renamed' WHERE id BETWEEN 21 AND 30")
    failed = devices.cli("run")
    assert failed.returncode == 1
    assert "run `bronzeline resync devices`" in failed.stderr
    assert failed.stderr.count("error:") == 1
    devices.cli("resync", "devices", check=True)
    with devices.src() as conn:
        conn.execute("INSERT INTO tracksolid.devices VALUES (5000, 'after', 1, 'x')")
    devices.cli("run", check=True)
    with devices.src() as src, devices.wh() as wh:
        assert table_digest(src, "tracksolid.devices") == table_digest(wh, "bronze.devices")
        notes = rows(wh, "SELECT note, lsn_start IS NOT NULL FROM dwh_control.extract_runs WHERE note IS NOT NULL")
    assert len(notes) == 1 and "was lost" in notes[0][0] and notes[0][1]
