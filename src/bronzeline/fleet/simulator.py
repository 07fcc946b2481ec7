"""The fleet simulator: seed a realistic tracksolid source, add bursts of activity, keep it busy.

    seed(conn, days=3, devices=150)   the past: recorded_at spread over `days`, late fixes
    burst(conn, minutes=10)           new activity as of now (recorded_at = now())
    run_forever(dsn, rate_per_second) a steady load with occasional long transactions

Command line (a load generator for a source under test):

    python -m bronzeline.fleet.simulator --dsn DSN --rate 50 [--seconds N] [--long-tx-every 30]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.errors import BronzelineError, SourceError
from bronzeline.fleet import history, writes
from bronzeline.fleet.live import LiveFleet, run_forever
from bronzeline.fleet.model import make_fleet, utc
from bronzeline.fleet.schema import SCHEMA, TABLES, create_source_schema, has_geometry, has_postgis

__all__ = ["burst", "main", "run_forever", "seed"]


def schema_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.devices",)).fetchone()
    return bool(row and row[0])


def seed(
    conn: psycopg.Connection[Any],
    days: float = 3,
    devices: int = 150,
    seed: int = 42,
    *,
    active_share: float | None = None,
    replace: bool = False,
) -> dict[str, int]:
    """Fill tracksolid with `devices` units and `days` of history ending at the source's now().

    Creates the schema when missing (with geometry when PostGIS is installed). Refuses a source
    that already has devices unless replace=True, which empties every tracksolid table first.
    Returns rows written per table; commits.
    """
    if days <= 0 or devices <= 0:
        raise ValueError("days and devices must be positive")
    rng = random.Random(seed)
    if not schema_exists(conn):
        create_source_schema(conn, has_postgis(conn))
    geom = has_geometry(conn, "position_history")
    with conn.transaction():
        if replace:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                    sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(t))
                                       for t in TABLES)
                )
            )
        elif _count(conn, "devices"):
            raise SourceError(f"{SCHEMA}.devices already has rows; seed an empty source or pass replace=True")
        # The source's clock, not this machine's: it is the clock bronzeline's windows use.
        row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        assert row is not None
        end = float(row[0])
        share = active_share if active_share is not None else rng.uniform(0.30, 0.38)
        fleet = make_fleet(rng, devices, utc(end), share)
        rows = history.build(rng, fleet, end - days * 86400, end, geom)
        counts: dict[str, int] = {}
        for table in TABLES:
            counts[table] = writes.copy_rows(conn, table, writes.columns(table, geom), rows[table])
        for table in TABLES:
            conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table)))
    if not conn.autocommit:
        conn.commit()
    return counts


def burst(conn: psycopg.Connection[Any], minutes: float = 10, seed: int | None = None) -> dict[str, int]:
    """Add `minutes` of fresh activity in one transaction, so every row's recorded_at is now().

    Some units drive short trips (fixes, trips, parkings, alarms), one or two silent units come
    back online (device events), a few buffered fixes hours old arrive late, live_positions and
    devices (odometer) are updated in place, and the API calls are logged. Commits.
    """
    if minutes <= 0:
        raise ValueError("minutes must be positive")
    rng = random.Random(seed)
    if not schema_exists(conn):
        raise SourceError(f"schema {SCHEMA} does not exist; seed the source first")
    geom = has_geometry(conn, "position_history")
    with conn.transaction():
        fleet = LiveFleet.load(conn, rng, geom, span_s=minutes * 60)
        if not fleet.vehicles:
            raise SourceError(f"{SCHEMA}.devices is empty; seed the source first")
        now = fleet.now
        batch = fleet.step(now, late_share=0.25, wake=True)
        counts = fleet.write(conn, batch)
        counts["ingestion_log"] = counts.get("ingestion_log", 0) + fleet.log_calls(
            conn, now, polls=max(1, math.ceil(minutes / 10)), rows=counts.get("position_history", 0)
        )
    if not conn.autocommit:
        conn.commit()
    return {t: counts.get(t, 0) for t in TABLES}


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))
    ).fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bronzeline.fleet.simulator",
        description="Keep a fleet-telematics source busy (bronzeline's fleet reference project).",
    )
    parser.add_argument("--dsn", default=os.environ.get("SOURCE_DSN"), help="source DSN (default $SOURCE_DSN)")
    parser.add_argument("--rate", type=float, default=50.0, help="position rows per second (default 50)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--long-tx-every", type=float, default=30.0,
                        help="open a long transaction every N seconds; 0 disables (default 30)")
    parser.add_argument("--long-tx-seconds", type=float, default=6.0,
                        help="how long each long transaction stays open (default 6)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--init", action="store_true",
                        help="create the tracksolid schema and seed it first when it has no devices")
    parser.add_argument("--days", type=float, default=3.0, help="days of history for --init (default 3)")
    parser.add_argument("--devices", type=int, default=150, help="registered devices for --init (default 150)")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("give --dsn or set SOURCE_DSN")
    if args.rate <= 0:
        parser.error("--rate must be positive")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.init:
            with psycopg.connect(args.dsn) as conn:
                if not schema_exists(conn) or not _count(conn, "devices"):
                    began = time.perf_counter()
                    counts = seed(conn, days=args.days, devices=args.devices, seed=args.seed or 42)
                    total = sum(counts.values())
                    print(f"seeded {total} rows in {time.perf_counter() - began:.1f} s: {counts}", flush=True)
        print(f"simulating {args.rate:g} rows/s; Ctrl-C to stop", flush=True)
        counts = run_forever(args.dsn, args.rate, long_transaction_every=args.long_tx_every,
                             long_transaction_seconds=args.long_tx_seconds, stop_after=args.seconds,
                             stop=stop, seed=args.seed)
    except (BronzelineError, psycopg.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = ", ".join(f"{t}={n}" for t, n in counts.items() if n)
    print(f"stopped; wrote {written or 'nothing'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
