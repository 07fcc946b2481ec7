"""`bronzeline demo`: an embedded PostgreSQL, a fleet-tracking source, the pipeline, the status.

Sits beside the CLI (it drives the runner like a user would), not below it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bronzeline.config import Config, load_config
from bronzeline.context import Context
from bronzeline.fleet.config_text import write_demo_config
from bronzeline.fleet.embedded import EmbeddedServer, embedded_server
from bronzeline.fleet.schema import create_source_schema
from bronzeline.fleet.simulator import burst, seed
from bronzeline.models.build import build
from bronzeline.models.outcome import BuildReport
from bronzeline.observe.status import TableStatus, table_status
from bronzeline.pipeline import TableOutcome, run_tables
from bronzeline.provision import migrate

Say = Callable[[str], None]
GOLD_QUERY = """SELECT day, vehicle_number, km, driving_seconds, trips, alarms, max_speed_kmh,
                       first_fix, last_fix
                FROM gold.daily_fleet_metrics ORDER BY km DESC, day DESC, imei LIMIT %s"""


@dataclass
class DemoResult:
    directory: Path
    config_path: Path
    first_run: list[TableOutcome]
    second_run: list[TableOutcome]
    status: list[TableStatus]
    source_dsn: str
    warehouse_dsn: str
    stop_command: str | None  # set when the server was kept running
    builds: list[BuildReport] = field(default_factory=list)  # `build` after each run
    gold_columns: list[str] = field(default_factory=list)  # a few rows of gold.daily_fleet_metrics
    gold_rows: list[tuple[Any, ...]] = field(default_factory=list)


def run_demo(directory: Path, *, keep: bool, say: Say, show_run: Callable[[list[TableOutcome]], None],
             days: float = 3.0) -> DemoResult:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    say(f"starting an embedded PostgreSQL in {directory / 'pgdata'} …")
    with embedded_server(directory, keep=keep) as server:
        say(f"  ready on 127.0.0.1:{server.port} in {server.startup_seconds:.1f}s")
        result = _pipeline(server, directory, keep=keep, say=say, show_run=show_run, days=days)
    return result


def _pipeline(server: EmbeddedServer, directory: Path, *, keep: bool, say: Say,
              show_run: Callable[[list[TableOutcome]], None], days: float) -> DemoResult:
    source_dsn = server.create_database("fleet_source")
    warehouse_dsn = server.create_database("fleet_warehouse")
    with psycopg.connect(source_dsn) as conn:
        postgis = _try_postgis(conn)
        create_source_schema(conn, postgis)
        started = time.monotonic()
        counts = seed(conn, days=days, replace=True)
    say(f"filled the source with {days:g} days of fleet history in {time.monotonic() - started:.1f}s: "
        + ", ".join(f"{n:,} {t}" for t, n in counts.items() if n))
    if not postgis:
        say("  (no PostGIS in the embedded server: positions carry lat/lng, without a geometry column)")
    config_path = write_demo_config(directory, source_dsn, warehouse_dsn, postgis)
    say(f"wrote {config_path}")
    config = load_config(config_path, {})
    with Context(config) as ctx:
        say("$ bronzeline migrate")
        report = migrate(ctx)
        say(f"  created {len(report.created)} bronze tables and the control schema {config.warehouse.control_schema}")
        say("$ bronzeline run")
        time.sleep(0.15)  # the window's bound stays 100 ms below the source clock
        first = run_tables(config)
        show_run(first)
        builds = [_build(config, say)]
        with psycopg.connect(source_dsn) as conn:
            more = burst(conn, minutes=10)
        say(f"simulated 10 more minutes of fleet activity: {sum(more.values()):,} new rows")
        time.sleep(0.15)
        say("$ bronzeline run")
        second = run_tables(config)
        show_run(second)
        builds.append(_build(config, say))
        status = table_status(ctx)
    columns, rows = _gold_rows(warehouse_dsn, config.timezone)
    return DemoResult(directory, config_path, first, second, status, source_dsn, warehouse_dsn,
                      server.stop_command() if keep else None, builds, columns, rows)


def _build(config: Config, say: Say) -> BuildReport:
    """`bronzeline build` of the fleet's models (silver, gold, reporting), one line per model."""
    say("$ bronzeline build")
    report = build(config)
    for check in report.sources:
        if check.status != "pass":
            say(f"  {check.spec.relation} {check.spec.name}: {check.status}, "
                f"{check.failing_rows:,} of {check.total_rows:,} rows")
    for model in report.models:
        rows = "" if model.rows is None else f" {model.rows:,} rows"
        failed = [c.spec.name for c in model.checks if c.status != "pass"]
        checks = f", checks not passed: {', '.join(failed)}" if failed else ""
        why = f": {model.message}" if model.message else ""
        say(f"  {model.model}: {model.status}{rows} in {model.seconds:.2f}s{checks}{why}")
    return report


def _gold_rows(warehouse_dsn: str, timezone: str, limit: int = 8) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The busiest vehicle-days of gold.daily_fleet_metrics (none when it was not built), times in the
    fleet's time zone like its days."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (timezone,))
        exists = conn.execute("SELECT to_regclass('gold.daily_fleet_metrics') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return [], []
        cur = conn.execute(GOLD_QUERY, (limit,))
        return [d.name for d in cur.description or []], cur.fetchall()


def _try_postgis(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.commit()
        return True
    except psycopg.Error:
        conn.rollback()
        return False
