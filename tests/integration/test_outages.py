"""Outages, for real: a throwaway PostgreSQL cluster of its own is restarted under a running extract or
load, the object store (a moto server on loopback, behind a proxy) goes away mid-upload, and
`schedule` runs through all of it against a source that keeps writing. Each time the failed attempt is
in the run history, the next attempt completes, and bronze matches the source exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bronzeline.context import Context
from bronzeline.provision import migrate
from tests.conftest import dsn_for
from tests.integration.cluster import Cluster, throwaway_cluster
from tests.integration.pipeline import Pipeline, table_digest
from tests.integration.s3server import S3Server, s3_server
from tests.integration.test_s3 import on_s3

EVENTS = """
CREATE SCHEMA src;
CREATE TABLE src.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL,
                         recorded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE src.knobs (delay double precision NOT NULL);
INSERT INTO src.knobs VALUES (0);
-- every 100th row sleeps `delay` seconds: an extract the test can make last
CREATE FUNCTION src.slow(id bigint) RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT true FROM (SELECT pg_sleep(CASE WHEN id % 100 = 0 THEN (SELECT delay FROM src.knobs) ELSE 0 END)) AS s $$;
"""
TABLE = """\
  - name: events
    query: "SELECT id, payload, recorded_at FROM src.events WHERE src.slow(id)"
    watermark: recorded_at
    key: [id]
"""
RETRIES = "retries: {attempts: 6, backoff_seconds: 0.4, max_backoff_seconds: 2}\n"


@pytest.fixture(scope="module")
def outage() -> Iterator[Cluster]:
    with throwaway_cluster() as cluster:
        # a commit survives a server crash (the test clusters otherwise commit asynchronously)
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        yield cluster


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def database(cluster_dsn: str) -> str:
    name = f"o_{time.monotonic_ns()}"
    with psycopg.connect(cluster_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn_for(cluster_dsn, dbname=name)


def make(tmp: Path, source: str, warehouse: str, rows: int, delay: float) -> Pipeline:
    """Superuser logins on both sides: these tests are about outages, not privileges."""
    pipe = Pipeline(tmp=tmp, source_dsn=source, warehouse_dsn=warehouse, source_admin=source,
                    warehouse_admin=warehouse, password="")
    with pipe.src() as conn:
        conn.execute(EVENTS)
        insert(conn, rows)
        conn.execute("UPDATE src.knobs SET delay = %s", (delay,))
    pipe.env["AWS_MAX_ATTEMPTS"] = "1"  # botocore's own retries: leave them to bronzeline
    return pipe


def insert(conn: psycopg.Connection[Any], n: int) -> None:
    conn.execute("INSERT INTO src.events (payload) SELECT 'event ' || g FROM generate_series(1, %s) g", (n,))


def prepare(pipe: Pipeline) -> None:
    pipe.write_config(TABLE, RETRIES)
    time.sleep(0.15)
    with Context(pipe.config()) as ctx:
        migrate(ctx)


def start(pipe: Pipeline, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = pipe.tmp / f"{args[0]}.log"
    proc = subprocess.Popen([sys.executable, "-m", "bronzeline.cli", "-c", str(pipe.config_path), *args],
                            env=pipe.environ(), cwd=pipe.tmp, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    return proc, log


def wait_for(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def copying(dsn: str, purpose: str) -> Callable[[], bool]:
    """Is bronzeline's `purpose` connection (extract, load) in the middle of a COPY?"""
    def check() -> bool:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                   "AND query LIKE 'COPY%%' AND state = 'active'", (f"bronzeline {purpose}",)
                                   ).fetchone()
                return row == (1,)
        except psycopg.OperationalError:
            return False
    return check


def history(pipe: Pipeline) -> list[tuple[Any, ...]]:
    with pipe.wh() as conn:
        return conn.execute("SELECT status, attempts, rows_loaded, error_message FROM dwh_control.extract_runs "
                            "WHERE table_name = 'events' ORDER BY run_id").fetchall()


def assert_parity(pipe: Pipeline) -> None:
    with pipe.src() as s, pipe.wh() as w:
        source = table_digest(s, "src.events")
        assert source == table_digest(w, "bronze.events")
    runs = history(pipe)
    assert not [r for r in runs if r[0] in ("extracting", "uploaded")]  # every run finished one way or the other
    assert sum(r[2] for r in runs if r[0] == "loaded") == source[0]  # each row inserted exactly once
    assert all(r[3] for r in runs if r[0] == "failed")  # every failure says why


def test_source_restart_mid_extract(outage: Cluster, new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, database(outage.dsn), new_database(postgis=False), rows=3000, delay=0.1)
    prepare(pipe)
    proc, log = start(pipe, "run")
    wait_for(copying(pipe.source_admin, "extract"))
    outage.restart()
    with pipe.src() as conn:
        conn.execute("UPDATE src.knobs SET delay = 0")
    assert proc.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "attempt 1 of 6 failed (transient)" in text and "loaded on attempt" in text
    runs = history(pipe)
    assert [(r[0], r[1]) for r in runs[:1]] == [("failed", 1)] and runs[-1][:2] == ("loaded", len(runs))
    assert "source" in runs[0][3] and "retrying in" in runs[0][3]
    assert_parity(pipe)
    # the command line explains the failure
    out = pipe.cli("runs", "--failed", check=True).stdout
    assert "attempt 1" in out and "failed: attempt 1 of 6 failed (transient)" in out


def test_warehouse_restart_mid_load(outage: Cluster, new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, new_database(postgis=False), database(outage.dsn), rows=3000, delay=0.1)
    prepare(pipe)
    proc, log = start(pipe, "run")
    wait_for(copying(pipe.warehouse_admin, "load"))
    outage.restart("immediate")  # as if the warehouse crashed
    with pipe.src() as conn:
        conn.execute("UPDATE src.knobs SET delay = 0")
    assert proc.wait(60) == 0, log.read_text()
    runs = history(pipe)
    assert runs[0][:2] == ("failed", 1) and "warehouse" in runs[0][3]
    assert runs[-1][0] == "loaded" and runs[-1][1] >= 2
    assert pipe.files("exports", "events") == []  # the interrupted batch never appeared
    assert_parity(pipe)


def test_object_store_down_during_upload(s3: S3Server, new_database: Any, tmp_path: Path) -> None:
    base = make(tmp_path, new_database(postgis=False), new_database(postgis=False), rows=3000, delay=0.1)
    pipe = on_s3(base, s3)
    prepare(pipe)
    proc, log = start(pipe, "run")
    wait_for(copying(pipe.source_admin, "extract"))
    s3.proxy.down()  # the upload happens when the file is complete: it finds the store gone
    try:
        wait_for(lambda: any(r[0] == "failed" for r in history(pipe)))
    finally:
        s3.proxy.up()
    with pipe.src() as conn:
        conn.execute("UPDATE src.knobs SET delay = 0")
    assert proc.wait(60) == 0, log.read_text()
    runs = history(pipe)
    assert runs[0][:2] == ("failed", 1) and "object store" in runs[0][3] and "transient" in runs[0][3]
    assert pipe.files("exports", "events") == [] and len(pipe.files("processed", "events")) == 2
    assert_parity(pipe)


def test_schedule_rides_out_restarts_and_a_store_outage(outage: Cluster, s3: S3Server, tmp_path: Path) -> None:
    """The acceptance scenario: the scheduler every 2 s, a source that keeps writing, the source's and
    the warehouse's server restarted (twice), the object store away for a while; then parity."""
    base = make(tmp_path, database(outage.dsn), database(outage.dsn), rows=1000, delay=0.05)
    pipe = on_s3(base, s3)
    pipe.write_config(TABLE, RETRIES + "schedule:\n  cron: \"* * * * * */2\"\n")
    time.sleep(0.15)
    with Context(pipe.config()) as ctx:
        migrate(ctx)
    stop = threading.Event()
    written = [1000]

    def write() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(pipe.source_admin, autocommit=True, connect_timeout=2) as conn:
                    while not stop.is_set():
                        insert(conn, 25)
                        written[0] += 25
                        time.sleep(0.05)
            except psycopg.OperationalError:
                time.sleep(0.1)  # the server is restarting: write again when it is back

    writer = threading.Thread(target=write)
    writer.start()
    proc, log = start(pipe, "schedule")
    try:
        loaded = lambda n: lambda: sum(r[0] == "loaded" for r in history(pipe)) >= n  # noqa: E731
        wait_for(loaded(1))
        wait_for(copying(pipe.source_admin, "extract"))
        outage.restart()  # mid-extract; the source and the warehouse both live on this cluster
        wait_for(loaded(3))
        wait_for(copying(pipe.warehouse_admin, "load"))
        s3.proxy.down()  # mid-run: the upload, the listing or the move finds the store gone
        time.sleep(2.5)
        s3.proxy.up()
        wait_for(loaded(5))
        wait_for(copying(pipe.warehouse_admin, "load"))
        outage.restart("immediate")  # as if the server crashed mid-load
        wait_for(loaded(7))
    finally:
        stop.set()
        writer.join()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = log.read_text()
    assert code == 0, text
    time.sleep(0.15)
    pipe.cli("run", check=True)  # the rows written since the scheduler's last run
    assert_parity(pipe)
    runs = history(pipe)
    failures = [r for r in runs if r[0] == "failed"]
    assert failures, "the outages left no trace in the run history"
    assert any("object store" in r[3] for r in failures), failures
    assert any("source" in r[3] or "warehouse" in r[3] for r in failures), failures
    report = json.loads(pipe.cli("runs", "--failed", "--json", "--limit", "100", check=True).stdout)
    assert len(report["runs"]) == len(failures) and all(r["error_message"] for r in report["runs"])
    assert written[0] > 1000


def test_failures_while_the_warehouse_is_down_reach_the_history_when_it_is_back(
        outage: Cluster, new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, new_database(postgis=False), database(outage.dsn), rows=100, delay=0.0)
    pipe.write_config(TABLE, "retries: {attempts: 2, backoff_seconds: 0.2}\nschedule:\n  cron: \"* * * * * *\"\n")
    time.sleep(0.15)
    with Context(pipe.config()) as ctx:
        migrate(ctx)
    proc, log = start(pipe, "schedule")
    try:
        wait_for(lambda: bool(history(pipe)))
        outage.stop()  # the warehouse is gone: no run can start, no failure can be written
        down = time.time()
        time.sleep(3)
        outage.start()
        up = time.time()
        wait_for(lambda: sum(r[0] == "loaded" for r in history(pipe)) >= 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "not yet in the run ledger (the warehouse is unreachable)" in text
    with pipe.wh() as conn:
        missed = conn.execute("SELECT attempts, error_message FROM dwh_control.extract_runs WHERE status = 'failed' "
                              "AND run_started_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)", (down, up)).fetchall()
    assert len(missed) >= 4 and {r[0] for r in missed} == {1, 2}, missed  # a row for every attempt
    assert all("cannot connect to 'warehouse'" in r[1] for r in missed)
    time.sleep(0.15)
    assert [o.status for o in pipe.run()] == ["loaded"]
    assert_parity(pipe)


# ------------------------------------------------------------------------------------ timeouts


def test_table_timeout_ends_a_slow_run_without_retrying(new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, new_database(postgis=False), new_database(postgis=False), rows=300, delay=1.0)
    prepare(pipe)
    pipe.write_config(TABLE + "    timeout: 1s\n", RETRIES)
    started = time.monotonic()
    [outcome] = pipe.run()
    took = time.monotonic() - started
    assert outcome.status == "failed" and outcome.attempts == 1 and took < 2.8, (took, outcome.message)
    assert "timed out after 1s" in outcome.message
    [run] = history(pipe)
    assert run[0] == "failed" and "timed out after 1s (tables[].timeout)" in run[3]
    with pipe.src() as conn:
        conn.execute("UPDATE src.knobs SET delay = 0")
    assert [o.status for o in pipe.run()] == ["loaded"]
    assert_parity(pipe)


@pytest.mark.parametrize("command", [("backfill", "events", "--since", "2000-01-01T00:00:00Z", "--until",
                                      "2100-01-01T00:00:00Z"), ("reseed", "events")])
def test_backfill_until_and_reseed_share_the_run_path(new_database: Any, tmp_path: Path,
                                                      command: tuple[str, ...]) -> None:
    """They once bypassed retries, tables[].timeout and the migrations check: now the table's timeout
    ends them like any run, and the next run completes the table."""
    pipe = make(tmp_path, new_database(postgis=False), new_database(postgis=False), rows=300, delay=1.0)
    pipe.write_config(TABLE + "    timeout: 1s\n", RETRIES)
    proc = pipe.cli(*command)
    assert proc.returncode == 1 and "run `bronzeline migrate`" in proc.stderr, proc.stderr
    prepare(pipe)
    pipe.write_config(TABLE + "    timeout: 1s\n", RETRIES)
    started = time.monotonic()
    proc = pipe.cli(*command)
    assert proc.returncode == 1 and time.monotonic() - started < 6, proc.stderr
    assert proc.stderr.count("error: events:") == 1 and "timed out after 1s" in proc.stderr, proc.stderr
    [run] = history(pipe)
    assert run[0] == "failed" and "timed out after 1s (tables[].timeout)" in run[3]
    with pipe.src() as conn:
        conn.execute("UPDATE src.knobs SET delay = 0")
    assert [o.status for o in pipe.run()] == ["loaded"]
    assert_parity(pipe)


def test_statement_timeout_is_terminal(new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, new_database(postgis=False), new_database(postgis=False), rows=300, delay=0.5)
    prepare(pipe)
    text = pipe.config_path.read_text()
    pipe.config_path.write_text(text.replace('source: {dsn: "${SOURCE_DSN}"}',
                                             'source: {dsn: "${SOURCE_DSN}", statement_timeout: 300ms}'))
    [outcome] = pipe.run()
    assert outcome.status == "failed" and outcome.attempts == 1
    assert "statement timeout" in outcome.message
    assert len(history(pipe)) == 1


def test_lock_timeout_in_the_warehouse_is_retried(new_database: Any, tmp_path: Path) -> None:
    pipe = make(tmp_path, new_database(postgis=False), new_database(postgis=False), rows=100, delay=0.0)
    prepare(pipe)
    pipe.write_config(TABLE, RETRIES + "warehouse: {lock_timeout: 200ms}\n")
    holder = pipe.wh()
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE bronze.events IN ACCESS EXCLUSIVE MODE")  # e.g. a long report or a DBA
    proc, log = start(pipe, "run")
    try:
        wait_for(lambda: any(r[0] == "failed" for r in history(pipe)))
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert proc.wait(60) == 0, log.read_text()
    runs = history(pipe)
    assert runs[0][:2] == ("failed", 1) and "lock_timeout (200ms)" in runs[0][3] and "(transient)" in runs[0][3]
    assert runs[-1][0] == "loaded" and runs[-1][1] >= 2
    assert_parity(pipe)
