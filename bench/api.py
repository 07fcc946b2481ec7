#!/usr/bin/env python3
"""bronzeline benchmark: API tables against the package's fake Tracksolid platform.

The fake runs in its own process (`python -m bronzeline.fleet.jimi_fake`), as the real platform is another
machine; bronzeline talks to it over HTTP on loopback with every call signed. On a local PostgreSQL
(superuser DSN) it measures, on a fresh warehouse database:

  * live positions: one `run` of a `live_positions` table for --devices devices (3 calls of 50 IMEIs for 150,
    signing, the JSON-lines batch, its load into the typed and raw tables, the ledger), in the running
    process (as `schedule` does it every minute); median and max of --repeat polls;
  * track points: one `run` of a `track` table reading --hours of high-resolution points of every device
    (one call per device), points/s end to end (calls, batch file, load), with the extract and load shares.

    python bench/api.py --dsn "host=127.0.0.1 port=54330 user=postgres password=… dbname=postgres"
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bronzeline.config import load_config
from bronzeline.context import Context
from bronzeline.pipeline import run_tables
from bronzeline.provision import migrate

CONFIG = """project: bench
connections:
  warehouse: {{dsn: "${{WAREHOUSE_DSN}}"}}
  jimi:
    type: tracksolid
    url: "${{JIMI_URL}}"
    app_key: "${{JIMI_APP_KEY}}"
    app_secret: "${{JIMI_APP_SECRET}}"
    user_id: "${{JIMI_USER_ID}}"
    password_md5: "${{JIMI_PASSWORD_MD5}}"
blob: {{url: "file://./blob"}}
tables:
  - {{name: api_live, source: jimi, endpoint: live_positions}}
  - {{name: api_track, source: jimi, endpoint: track, since: {hours} hours, settle: 1 minute}}
"""


def start_fake(devices: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "bronzeline.fleet.jimi_fake", "--port", "0", "--devices",
                             str(devices), "--late-share", "0"], stdout=subprocess.PIPE, text=True)
    env: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.match(r"export (\w+)=(.*)", line.strip())
        if match:
            env[match.group(1)] = match.group(2)
        if "JIMI_TARGETS" in env:
            break
    return proc, env


def warm(env: dict[str, str], hours: float) -> None:
    from datetime import UTC, datetime, timedelta

    from bronzeline.config.models import TracksolidConfig
    from bronzeline.sources.tracksolid.client import TracksolidClient

    cfg = TracksolidConfig(type="tracksolid", url=env["JIMI_URL"], app_key=env["JIMI_APP_KEY"],
                           app_secret=env["JIMI_APP_SECRET"], user_id=env["JIMI_USER_ID"],
                           password_md5=env["JIMI_PASSWORD_MD5"])
    client = TracksolidClient("warm", cfg, None)
    end = datetime.now(UTC)
    span = {"begin_time": (end - timedelta(hours=hours + 1)).strftime("%Y-%m-%d %H:%M:%S"),
            "end_time": end.strftime("%Y-%m-%d %H:%M:%S")}
    for device in client.call("jimi.user.device.list", {"target": env["JIMI_USER_ID"]}).result or []:
        client.call("jimi.device.track.list", {"imei": device["imei"], **span}, imeis=1)
    client.close()


def fresh_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return dsn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", required=True, help="superuser DSN of a local PostgreSQL with PostGIS")
    ap.add_argument("--devices", type=int, default=150)
    ap.add_argument("--hours", type=float, default=24.0, help="hours of track points to read")
    ap.add_argument("--repeat", type=int, default=5, help="live-position polls")
    args = ap.parse_args()
    fake, env = start_fake(args.devices)
    try:
        wh = fresh_database(args.dsn, "bronzeline_bench_api")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bronzeline.yml"
            path.write_text(CONFIG.format(hours=args.hours))
            config = load_config(path, {**os.environ, **env, "WAREHOUSE_DSN": wh})
            with Context(config) as ctx:
                migrate(ctx)
            print(f"fake platform: {env['JIMI_URL']} ({args.devices} devices), warehouse "
                  f"{conninfo_to_dict(wh).get('dbname')}")
            polls = []
            for _ in range(args.repeat):
                started = time.monotonic()
                [outcome] = run_tables(config, ["api_live"])
                polls.append(time.monotonic() - started)
                assert outcome.status == "loaded", outcome.message
            print(f"live positions, {outcome.rows_extracted} devices: median {statistics.median(polls) * 1000:.0f} ms, "
                  f"max {max(polls) * 1000:.0f} ms per poll (calls, batch file, load, ledger; in process)")
            walls = []
            for _ in range(3):  # the same poll as a whole `bronzeline run` process, Python start-up included
                started = time.monotonic()
                subprocess.run([sys.executable, "-m", "bronzeline", "-c", str(path), "run", "api_live"], check=True,
                               env={**os.environ, **env, "WAREHOUSE_DSN": wh}, capture_output=True)
                walls.append(time.monotonic() - started)
            print(f"  as a `bronzeline run api_live` process: median {statistics.median(walls):.2f} s")
            # The platform has its points already; the fake computes them on first request: read them once
            # (straight HTTP calls, no bronzeline) so the timed run measures serving and bronzeline, not the fake's
            # trajectory model.
            warm(env, args.hours)
            started = time.monotonic()
            [track] = run_tables(config, ["api_track"])
            seconds = time.monotonic() - started
            assert track.status == "loaded", track.message
            with psycopg.connect(wh) as conn:
                row = conn.execute("SELECT extract(epoch FROM uploaded_at - run_started_at), "
                                   "extract(epoch FROM run_finished_at - uploaded_at) FROM dwh_control.extract_runs "
                                   "WHERE table_name = 'api_track' ORDER BY run_id DESC LIMIT 1").fetchone()
                calls = conn.execute("SELECT count(*) FROM dwh_control.api_calls WHERE table_name = 'api_track'"
                                     ).fetchone()
            assert row is not None and calls is not None
            points = track.rows_extracted
            print(f"track, {points:,} points of {args.hours:g} h from {calls[0]} calls: {seconds:.2f} s, "
                  f"{points / seconds:,.0f} points/s end to end (extract {float(row[0]):.2f} s, "
                  f"load {float(row[1]):.2f} s)")
    finally:
        fake.terminate()
        fake.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
