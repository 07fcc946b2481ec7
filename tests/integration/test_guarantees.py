"""No lost rows under open transactions, refused batch files, the per-table lock."""

from __future__ import annotations

import gzip
import random
import threading
import time
from typing import Any

import psycopg

from bronzeline.context import Context
from bronzeline.pipeline import run_tables
from tests.integration.pipeline import Pipeline, table_digest
from tests.integration.test_core import assert_parity, insert_positions, setup


def test_open_transaction_holds_the_bound_back(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.src() as admin, psycopg.connect(pipeline.source_admin) as long_tx:
        # A transaction opens, writes a row stamped with its start, and stays open across a run.
        long_tx.execute("INSERT INTO tracksolid.position_history (imei, gps_time) VALUES ('353549000009999', now())")
        started = long_tx.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.3)
        insert_positions(admin, 50, start=100)  # committed rows, stamped after the open transaction began
        time.sleep(0.15)
        pipeline.cli("run", "position_history", check=True)
        with pipeline.wh() as wh:
            run = wh.execute("SELECT window_end, oldest_xact_start, holdback_seconds FROM dwh_control.extract_runs "
                             "WHERE table_name = 'position_history' ORDER BY run_id DESC LIMIT 1").fetchone()
            assert run is not None
            assert run[0] < started and run[1] == started and run[2] > 0.3
            assert wh.execute("SELECT count(*) FROM bronze.position_history").fetchone() == (100,)
        long_tx.commit()  # the row commits with a watermark older than the last run's bound... no: below it
    time.sleep(0.15)
    pipeline.cli("run", "position_history", check=True)
    assert_parity(pipeline)


def _writer(dsn: str, stop: threading.Event, seed: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        with psycopg.connect(dsn) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("INSERT INTO tracksolid.position_history (imei, gps_time) "
                                 "SELECT '3535490000' || lpad(%s::text, 5, '0'), now() FROM generate_series(1, %s)",
                                 (rng.randrange(100), rng.randrange(1, 5)))
                    if rng.random() < 0.25:
                        time.sleep(rng.uniform(0.2, 2.5))  # a long transaction, rows stamped at its start
                    else:
                        time.sleep(rng.uniform(0, 0.02))
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


def test_no_row_lost_or_doubled_under_concurrent_long_transactions(pipeline: Pipeline) -> None:
    setup(pipeline, rows=0)
    pipeline.cli("migrate", check=True)
    stop = threading.Event()
    errors: list[BaseException] = []
    writers = [threading.Thread(target=_writer, args=(pipeline.source_admin, stop, i, errors)) for i in range(6)]
    for w in writers:
        w.start()
    runs = 0
    config = pipeline.config()
    try:
        deadline = time.monotonic() + 12
        with Context(config) as ctx:  # one set of connections for every run, as a scheduler keeps
            while time.monotonic() < deadline:
                outcome = run_tables(config, ["position_history"], ctx=ctx)[0]
                assert outcome.status == "loaded", outcome.message
                runs += 1
                time.sleep(0.05)
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert not errors, errors
    time.sleep(0.15)
    pipeline.cli("run", "position_history", check=True)
    with pipeline.src() as s, pipeline.wh() as w:
        src = table_digest(s, "tracksolid.position_history")
        assert src[0] > 200 and runs > 20
        assert src == table_digest(w, "bronze.position_history")
        # rows were loaded by many runs, not only by the final one
        loaded_before_last = w.execute(
            "SELECT sum(rows_loaded) FROM (SELECT rows_loaded FROM dwh_control.extract_runs "
            "WHERE status = 'loaded' ORDER BY run_id DESC OFFSET 1) r").fetchone()
        assert loaded_before_last is not None and loaded_before_last[0] > src[0] // 2


def _crash_after_upload(pipeline: Pipeline) -> tuple[str, Any]:
    setup(pipeline, rows=1000)
    pipeline.cli("migrate", check=True)
    killed = pipeline.cli("run", "position_history", env={"BRONZELINE_CRASH_AT": "uploaded"})
    assert killed.returncode != 0
    data = [n for n in pipeline.files("exports", "position_history") if n.endswith(".csv.gz")]
    assert len(data) == 1
    return data[0], pipeline.blob / "exports" / "position_history" / data[0]


def _assert_refused_then_recovered(pipeline: Pipeline, name: str) -> None:
    proc = pipeline.cli("run", "position_history")
    assert proc.returncode == 1 and "moved to failed/" in proc.stderr and "Traceback" not in proc.stderr
    assert name in pipeline.files("failed", "position_history")
    assert name.replace(".csv.gz", ".manifest.json") in pipeline.files("failed", "position_history")
    with pipeline.wh() as conn:
        assert conn.execute("SELECT count(*) FROM bronze.position_history").fetchone() == (0,)
        assert conn.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks").fetchone() == (None,)
        run_id = int(name.split("_")[-1].split(".")[0])
        row = conn.execute("SELECT status, error_message FROM dwh_control.extract_runs WHERE run_id = %s",
                           (run_id,)).fetchone()
        assert row is not None and row[0] == "failed" and "refused" in row[1]
    pipeline.cli("run", check=True)  # the next run re-extracts the window
    assert_parity(pipeline)


def test_truncated_batch_file_is_refused_and_the_window_reextracted(pipeline: Pipeline) -> None:
    name, path = _crash_after_upload(pipeline)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_refused_then_recovered(pipeline, name)


def test_edited_batch_file_is_refused(pipeline: Pipeline) -> None:
    name, path = _crash_after_upload(pipeline)
    text = gzip.decompress(path.read_bytes()).replace(b"353549", b"353548", 1)
    path.write_bytes(gzip.compress(text))
    _assert_refused_then_recovered(pipeline, name)


def test_data_file_without_manifest_is_deleted(pipeline: Pipeline) -> None:
    setup(pipeline, rows=500)
    pipeline.cli("migrate", check=True)
    killed = pipeline.cli("run", "position_history", env={"BRONZELINE_CRASH_AT": "extract"})
    assert killed.returncode != 0
    assert pipeline.files("exports", "position_history")  # a partial file is left behind
    pipeline.cli("run", check=True)
    assert pipeline.files("exports", "position_history") == []
    with pipeline.wh() as conn:
        first = conn.execute("SELECT status, error_message FROM dwh_control.extract_runs ORDER BY run_id "
                             "LIMIT 1").fetchone()
        assert first is not None and first[0] == "failed" and "re-extracts" in first[1]
    assert_parity(pipeline)


def test_a_locked_table_is_skipped_not_failed(pipeline: Pipeline) -> None:
    setup(pipeline, rows=10)
    pipeline.cli("migrate", check=True)
    with psycopg.connect(pipeline.warehouse_admin, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                       ("bronzeline:fleet:dwh_control:position_history",))
        proc = pipeline.cli("run")
        assert proc.returncode == 0, proc.stderr
        assert "position_history: another run holds this table's lock; skipped" in proc.stderr
        assert "devices: loaded" in proc.stdout
        with pipeline.wh() as conn:
            assert conn.execute("SELECT count(*) FROM dwh_control.extract_runs "
                                "WHERE table_name = 'position_history'").fetchone() == (0,)


def test_readers_are_never_blocked_and_never_see_a_half_load(pipeline: Pipeline) -> None:
    setup(pipeline, rows=2000)
    pipeline.write_config(pipeline.tables_yaml, extra_yaml="warehouse: {lock_timeout: 3s}\n")
    pipeline.cli("migrate", check=True)
    # A reader holds the (empty) bronze tables open in a transaction across the first load.
    with psycopg.connect(pipeline.warehouse_admin) as reader:
        assert reader.execute("SELECT count(*) FROM bronze.position_history").fetchone() == (0,)
        assert reader.execute("SELECT count(*) FROM bronze.devices").fetchone() == (0,)
        started = time.monotonic()
        pipeline.cli("run", check=True)
        assert time.monotonic() - started < 3  # not blocked by the reader
        # read committed: the reader now sees the whole load, not part of it
        assert reader.execute("SELECT count(*) FROM bronze.position_history").fetchone() == (2000,)
        with pipeline.src() as conn:
            conn.execute("UPDATE tracksolid.devices SET plate = plate || 'x'")
            conn.execute("DELETE FROM tracksolid.devices WHERE imei > '353549000000070'")
        reader.commit()
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        before = reader.execute("SELECT count(*), min(plate) FROM bronze.devices").fetchone()
        pipeline.cli("run", "devices", check=True)  # the snapshot load runs while the reader reads
        assert reader.execute("SELECT count(*), min(plate) FROM bronze.devices").fetchone() == before
        reader.commit()
        after = reader.execute("SELECT count(*), bool_and(plate LIKE '%x') FROM bronze.devices").fetchone()
        assert after == (71, True)
    assert_parity(pipeline)
