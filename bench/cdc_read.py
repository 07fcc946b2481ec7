#!/usr/bin/env python3
"""bronzeline CDC source-side benchmark: reading and decoding a slot's backlog.

On a local PostgreSQL with wal_level=logical (superuser DSN), in a scratch database:
  * a fleet-like table (bigint key, text, timestamptz, two float8, real, text) in a publication, a pgoutput
    slot created through bronzeline's ChangeSource;
  * a backlog of N changes (default 1,000,000: 60 % inserts, 30 % updates, 10 % deletes, in transactions of
    10,000 changes), written before the read starts;
  * every 100,000 changes a CHECKPOINT, which logs the running-transactions record the background writer
    logs every 15 s on a server that is writing: a peek always decodes from the slot's restart point, which
    advance() moves only past such a record, so a backlog written in seconds without one would make every
    page decode everything before it again (--no-checkpoints shows that worst case);
  * the read: ChangeSource.read_spooled(page) then advance(end_lsn), until the slot is caught up — peek +
    transfer + pgoutput decoding straight into per-table COPY text files, as `stream` pays it (without the
    warehouse side); `--objects` reads Change objects instead (read_page: tests and the planner's pages);
  * also the server alone: the same backlog peeked with `SELECT count(*)` (decoding on the server, nothing
    sent), the floor any SQL-polling reader pays;
  * peak RSS of this process (ru_maxrss): flat with spooled pages; one page of Change objects with --objects.

    PYTHONPATH=src python bench/cdc_read.py --dsn "host=127.0.0.1 port=54331 user=postgres password=…" \
        --changes 1000000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bronzeline.config.models import ConnectionConfig
from bronzeline.sources.cdc.slot import ChangeSource

DB, SLOT, PUB = "bench_cdc", "bench_cdc_slot", "bench_cdc_pub"
DDL = """
CREATE TABLE positions (
    id bigint PRIMARY KEY, imei text NOT NULL, gps_time timestamptz NOT NULL,
    lat double precision, lng double precision, speed real, source text);
CREATE PUBLICATION bench_cdc_pub FOR TABLE positions;
"""
TXN = 10_000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_backlog(conn: psycopg.Connection[object], changes: int, checkpoints: bool) -> None:
    inserts, updates = int(changes * 0.6), int(changes * 0.3)
    deletes = changes - inserts - updates
    written = [0]

    def progress() -> None:
        written[0] += TXN
        if checkpoints and written[0] % 100_000 == 0:
            conn.execute("CHECKPOINT")

    for lo in range(0, inserts, TXN):
        conn.execute("INSERT INTO positions SELECT g, '35354900' || lpad((g %% 80)::text, 7, '0'), "
                     "'2024-01-01'::timestamptz + g * interval '1 second', -1.28 + g * 1e-6, 36.8 + g * 1e-6, "
                     "(g %% 110)::real, CASE WHEN g %% 7 = 0 THEN 'track_list' ELSE 'poll' END "
                     "FROM generate_series(%s::bigint, %s::bigint) g", (lo, min(lo + TXN, inserts) - 1))
        progress()
    for lo in range(0, updates, TXN):
        conn.execute("UPDATE positions SET speed = speed + 1, source = 'fixed' WHERE id >= %s AND id < %s",
                     (lo, min(lo + TXN, updates)))
        progress()
    for lo in range(0, deletes, TXN):
        conn.execute("DELETE FROM positions WHERE id >= %s AND id < %s",
                     (inserts - deletes + lo, inserts - deletes + min(lo + TXN, deletes)))
        progress()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="superuser DSN of a PostgreSQL with wal_level=logical")
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=100_000, help="max changes per page (cdc.page_changes)")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="no running-transactions record in the backlog: every page re-decodes what precedes it")
    parser.add_argument("--verbose", action="store_true", help="one line per page")
    parser.add_argument("--objects", action="store_true", help="decode into Change objects (read_page)")
    args = parser.parse_args()

    params = conninfo_to_dict(args.dsn)
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                      (SLOT,))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    params["dbname"] = DB
    dsn = make_conninfo(**params)  # type: ignore[arg-type]
    source = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DDL)
            source = ChangeSource("source", ConnectionConfig(dsn=dsn), SLOT, PUB)
            with source.create_slot():
                pass
            t0 = time.perf_counter()
            write_backlog(conn, args.changes, not args.no_checkpoints)
            conn.execute("SELECT pg_switch_wal()")  # the backlog flushed before the read starts
            print(f"backlog: {args.changes:,} changes written in {time.perf_counter() - t0:.1f} s; "
                  f"retained WAL {source.health().retained_bytes or 0:,} bytes")
            t0 = time.perf_counter()
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
                "'publication_names', %s)", (SLOT, PUB)).fetchone() or (0,)
            server = time.perf_counter() - t0
            print(f"server alone (peek, count only): {count:,} messages in {server:.2f} s")

        base = rss_mb()
        total = pages = 0
        advancing = 0.0
        t0, cpu0 = time.perf_counter(), time.process_time()
        folder = Path(tempfile.mkdtemp(prefix="bronzeline-cdc-read-"))
        while True:
            if args.objects:
                page = source.read_page(args.page)
                changes = len(page.changes)
            else:
                spooled = source.read_spooled(args.page, folder)
                spooled.discard()
                page, changes = spooled, spooled.changes  # type: ignore[assignment]
            t1 = time.perf_counter()
            if page.end_lsn is not None:
                source.advance(page.end_lsn)
            advancing += time.perf_counter() - t1
            total += changes
            pages += 1
            if args.verbose:
                h = source.health()
                print(f"  page {pages}: {changes:,} changes, {time.perf_counter() - t0:.2f} s; slot "
                      f"restart {h.restart_lsn}, confirmed {h.confirmed_flush_lsn}")
            if page.caught_up:
                break
            del page
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        folder.rmdir()
        print(f"read + decode: {total:,} changes in {pages} pages of about {args.page:,} in {wall:.2f} s "
              f"= {total / wall:,.0f} changes/s")
        print(f"  of which advance(): {advancing:.2f} s; this process's CPU (transfer + decoding): {cpu:.2f} s "
              f"= {total / cpu:,.0f} changes per CPU second")
        print(f"peak RSS: {rss_mb():.0f} MB (before the read: {base:.0f} MB)")
    finally:
        if source is not None:
            source.drop_slot()
            source.close()
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


if __name__ == "__main__":
    main()
