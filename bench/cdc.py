#!/usr/bin/env python3
"""Change data capture benchmark: a backlog applied by `bronzeline run`, and `stream`'s end-to-end lag.

On a local PostgreSQL with wal_level=logical (superuser DSN), in one run:
  * a published source table of fleet devices; the first load (slot + exported snapshot);
  * a backlog of N changes at the source (inserts, then updates of half of them, then deletes of a tenth,
    in 10k-row transactions written in a few seconds: no running-transactions record inside it, so every
    peek decodes again from the start of the backlog — the case where the page size matters most),
    applied by one `bronzeline run` process: changes per second (whole process: start-up, peeks, decoding
    into per-table COPY line files, batch files, the set-based apply in the warehouse, with the next page
    read while the previous one is applied) and its peak RSS (flat: pages are decoded to local disk);
  * `stream` under a writer committing ~R changes/s in small transactions: the lag from each commit at
    the source to the row being visible in bronze (p50, p95, max).

    python bench/cdc.py --dsn "host=127.0.0.1 port=54332 user=postgres password=… dbname=postgres" \
        --changes 1000000 --page 500000

The source and the warehouse are databases of the same server here: its cores do the logical decoding,
the client's decoding and the warehouse's apply at once.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SRC_DB, WH_DB, SLOT = "bench_cdc_source", "bench_cdc_warehouse", "bench_cdc"
ROOT = Path(__file__).resolve().parents[1]

DDL = """
CREATE SCHEMA tracksolid;
CREATE TABLE tracksolid.devices (id bigint PRIMARY KEY, imei text NOT NULL, odometer bigint, speed real,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp(), notes text);
INSERT INTO tracksolid.devices (id, imei, odometer, speed, notes)
SELECT g, '3535' || g, g, 0, 'device ' || g FROM generate_series(1, 10000) g;
CREATE PUBLICATION bench_cdc FOR TABLE tracksolid.devices;
"""


def dsn_for(admin: str, **over: str) -> str:
    params = conninfo_to_dict(admin)
    params.update(over)
    return make_conninfo(**params)  # type: ignore[arg-type]


def recreate(admin: str) -> tuple[str, str]:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     (SLOT,))
        for db in (SRC_DB, WH_DB):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    src, wh = dsn_for(admin, dbname=SRC_DB), dsn_for(admin, dbname=WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(DDL)
    return src, wh


def write_config(folder: Path, page: int) -> Path:
    path = folder / "bronzeline.yml"
    path.write_text(
        "project: bench\nconnections:\n  source: {dsn: \"${SOURCE_DSN}\"}\n  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
        "blob: {url: file://./blob, compression: gzip}\n"
        f"cdc: {{slot: {SLOT}, publication: bench_cdc, poll_interval: 0.1s, page_changes: {page}}}\n"
        "tables:\n  - {name: devices, from: tracksolid.devices, mode: cdc, key: [id]}\n")
    return path


def cli(config: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    """Run `bronzeline ARGS`; (seconds, peak RSS in MB of that child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bronzeline.cli", "-c", str(config), *args], env=env, check=True,
                   cwd=config.parent)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(after, before) / 1024


def backlog(src: str, changes: int) -> int:
    """Inserts, updates of half of them, deletes of a tenth: `changes` changes in 10k-row transactions."""
    inserts = int(changes / 1.6)
    made = 0
    with psycopg.connect(src, autocommit=True) as conn:
        for first in range(100_001, 100_001 + inserts, 10_000):
            last = min(first + 9_999, 100_000 + inserts)
            conn.execute("INSERT INTO tracksolid.devices (id, imei, odometer, speed, notes) SELECT g, 'x' || g, g, 1, "
                         "'n' FROM generate_series(%s::bigint, %s::bigint) g", (first, last))
            made += last - first + 1
            made += conn.execute("UPDATE tracksolid.devices SET odometer = odometer + 1 WHERE id BETWEEN %s AND %s "
                                 "AND id %% 2 = 0", (first, last)).rowcount
            made += conn.execute("DELETE FROM tracksolid.devices WHERE id BETWEEN %s AND %s AND id %% 10 = 3",
                                 (first, last)).rowcount
    return made


def lag(src: str, wh: str, config: Path, env: dict[str, str], rate: int, seconds: float) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-m", "bronzeline.cli", "-c", str(config), "stream"], env=env,
                            cwd=config.parent, stderr=subprocess.DEVNULL)
    lags: list[float] = []
    stop = threading.Event()
    committed: dict[int, float] = {}

    def write() -> None:
        next_id = 10_000_000
        with psycopg.connect(src, autocommit=True) as conn:
            while not stop.is_set():
                batch = max(1, rate // 20)
                conn.execute("INSERT INTO tracksolid.devices (id, imei) SELECT g, 'l' FROM generate_series(%s::bigint, "
                             "%s::bigint) g", (next_id, next_id + batch - 1))
                committed[next_id + batch - 1] = time.perf_counter()
                next_id += batch
                time.sleep(0.05)

    try:
        time.sleep(2)  # start-up
        thread = threading.Thread(target=write)
        thread.start()
        end = time.perf_counter() + seconds
        with psycopg.connect(wh, autocommit=True) as conn:
            while time.perf_counter() < end or committed:
                if time.perf_counter() >= end:
                    stop.set()
                seen = conn.execute("SELECT coalesce(max(id), 0) FROM bronze.devices WHERE id >= 10000000"
                                    ).fetchone()[0]  # type: ignore[index]
                now = time.perf_counter()
                for last_id in [k for k in committed if k <= seen]:
                    lags.append(now - committed.pop(last_id))
                time.sleep(0.02)
                if time.perf_counter() > end + 30:
                    break
        stop.set()
        thread.join()
    finally:
        proc.terminate()
        proc.wait()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BRONZELINE_TEST_PG"), help="superuser DSN")
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=500_000, help="cdc.page_changes")
    parser.add_argument("--rate", type=int, default=1000, help="changes/s written during the lag test")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    src, wh = recreate(args.dsn)
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), args.page)
        env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh,
               "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cli(config, env, "migrate")
        cli(config, env, "run")  # the first load: slot + snapshot
        made = backlog(src, args.changes)
        seconds, rss = cli(config, env, "run")
        print(f"backlog: {made:,} changes applied by one `run` in {seconds:.1f}s = {made / seconds:,.0f} changes/s "
              f"(whole process: decode, batch files, apply); peak RSS {rss:.0f} MB (page_changes {args.page:,})")
        lags = sorted(lag(src, wh, config, env, args.rate, args.seconds))
        if lags:
            p95 = lags[int(0.95 * (len(lags) - 1))]
            print(f"stream lag at ~{args.rate:,} changes/s: p50 {statistics.median(lags):.2f}s, p95 {p95:.2f}s, "
                  f"max {lags[-1]:.2f}s over {len(lags)} commits")
    recreate_cleanup(args.dsn)


def recreate_cleanup(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     (SLOT,))
        for db in (SRC_DB, WH_DB):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


if __name__ == "__main__":
    main()
