"""`bronzeline demo --api`: the demo fed from the package's fake Tracksolid platform and pushes instead of a
database — an embedded PostgreSQL for the warehouse only, the fake served in process, the reference
config's API block, `migrate`, a run of the polled tables, the receiver and a burst of pushes, a second run
once the platform's clock has moved on, the status and the call log.

`api_pipeline` is everything after the warehouse exists: it takes a warehouse DSN, so it runs as well
against any PostgreSQL (the tests use their cluster).
"""

from __future__ import annotations

import os
import secrets
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bronzeline.config import Config, load_config
from bronzeline.context import Context
from bronzeline.extras import MissingExtra, require
from bronzeline.fleet.config_text import write_demo_config
from bronzeline.fleet.demo import _try_postgis
from bronzeline.fleet.demo_pushes import PushReport, burst, receive_burst
from bronzeline.fleet.embedded import embedded_server
from bronzeline.fleet.jimi_fake import FakePlatform, FakeSettings
from bronzeline.observe.api_calls import ApiView, api_view
from bronzeline.observe.status import TableStatus, table_status
from bronzeline.pipeline import TableOutcome, run_tables
from bronzeline.provision import migrate

Say = Callable[[str], None]
ShowRun = Callable[[list[TableOutcome]], None]
ADVANCE_SECONDS = 600  # how far the platform's clock moves between the two runs
PUSHED_DEVICES = 10

API_QUERIES = (
    "SELECT imei, count(*) AS fixes, count(*) FILTER (WHERE gps_mode = 1) AS late FROM bronze.api_track "
    "GROUP BY 1 ORDER BY 2 DESC LIMIT 5;",
    "SELECT imei, start_time, distance_m, distance_km FROM bronze.api_trips ORDER BY start_time DESC LIMIT 5;",
    "SELECT alarm_type, alarm_name, count(*) FROM bronze.api_alarms GROUP BY 1, 2 ORDER BY 3 DESC;",
    "SELECT method, code, count(*), round(avg(duration_ms)) AS avg_ms FROM dwh_control.api_calls "
    "GROUP BY 1, 2 ORDER BY 1, 2;",
    "SELECT error, record FROM bronze.push_gps_raw WHERE error IS NOT NULL;",
    "SELECT imei, event_time, payload FROM bronze.push_obd;",
)


def demo_settings() -> FakeSettings:
    """The demo's platform: 150 devices, the last two of every 200 calls refused as too frequent (1006), and
    tokens that live 8 s, so the run shows the back-off and the renewals (the client refreshes a token
    this short-lived at half its life)."""
    return FakeSettings(devices_per_account=150, rate_limit_every=200, rate_limit_burst=2, token_ttl_seconds=8.0)


@dataclass(frozen=True)
class TableRows:
    table: str
    typed: int
    raw: int
    invalid: int  # raw records with an error (not in the typed table)


@dataclass
class ApiDemoResult:
    directory: Path
    config_path: Path
    first_run: list[TableOutcome]
    second_run: list[TableOutcome]
    status: list[TableStatus]
    api: ApiView
    rows: list[TableRows]
    pushes: PushReport | None  # None: the `serve` extra is missing, no receiver was run
    env: dict[str, str]  # what the config reads: the warehouse DSN, the fake's credentials, the push token
    stop_command: str | None = None  # set when the embedded server was kept running
    fake_calls: int = 0
    warehouse_dsn: str = field(default="", repr=False)


def run_api_demo(directory: Path, *, keep: bool, say: Say, show_run: ShowRun) -> ApiDemoResult:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    say(f"starting an embedded PostgreSQL (the warehouse only) in {directory / 'pgdata'} …")
    with embedded_server(directory, keep=keep) as server:
        say(f"  ready on 127.0.0.1:{server.port} in {server.startup_seconds:.1f}s")
        warehouse_dsn = server.create_database("fleet_warehouse")
        with psycopg.connect(warehouse_dsn) as conn:
            if not _try_postgis(conn):
                say("  (no PostGIS in the embedded server: positions carry lat/lng, without a geometry column)")
        result = api_pipeline(directory, warehouse_dsn, say=say, show_run=show_run)
        result.stop_command = server.stop_command() if keep else None
    return result


def api_pipeline(directory: Path, warehouse_dsn: str, *, say: Say, show_run: ShowRun,
                 settings: FakeSettings | None = None, pushes: bool | None = None) -> ApiDemoResult:
    """The fake platform, the config, migrate, run, the receiver, run again; `pushes` None: run the
    receiver when the `serve` extra is installed."""
    fake = FakePlatform(settings or demo_settings()).start()
    # The platform's clock starts behind the machine's and catches up before the second run, so that no
    # watermark ends up in the future.
    fake.advance(-ADVANCE_SECONDS)
    try:
        s = fake.settings
        say(f"serving a fake Tracksolid platform at {fake.url}: {len(fake.devices)} devices, code 1006 on "
            f"{s.rate_limit_burst} of every {s.rate_limit_every} calls, tokens living {s.token_ttl_seconds:g}s")
        token = secrets.token_urlsafe(18)
        credentials = {k: v for k, v in fake.env().items() if k != "JIMI_TARGETS"}  # the config reads no targets
        env = {"WAREHOUSE_DSN": warehouse_dsn, **credentials, "PUSH_TOKEN": token}
        config_path = write_demo_config(directory, None, None, postgis=True, api=True)
        say(f"wrote {config_path} (the reference config's API and push tables; credentials from the environment)")
        full_env = {**os.environ, **env}
        config = load_config(config_path, full_env)
        with Context(config) as ctx:
            say("$ bronzeline migrate")
            report = migrate(ctx)
            say(f"  created {len(report.created)} bronze tables and the control schema "
                f"{config.warehouse.control_schema}")
        polled = [t.name for t in config.tables if not _pushed(config, t.name)]
        say(f"$ bronzeline run {' '.join(polled)}")
        first = run_tables(config, polled)
        show_run(first)
        pushed = _pushes(config, config_path, full_env, token, fake, say, pushes)
        fake.advance(ADVANCE_SECONDS)
        say(f"{ADVANCE_SECONDS // 60} minutes later on the platform: new fixes, trips and alarms, and fixes "
            "re-uploaded late")
        say("$ bronzeline run")
        second = run_tables(config)
        show_run(second)
        say("the models (silver, gold) read the database demo's tables: `build` is skipped with --api")
        with Context(config) as ctx:
            status = table_status(ctx)
            api = api_view(ctx)
        rows = table_rows(config, warehouse_dsn)
        return ApiDemoResult(directory.resolve(), config_path, first, second, status, api, rows, pushed, env,
                             fake_calls=len(fake.calls), warehouse_dsn=warehouse_dsn)
    finally:
        fake.stop()


def _pushed(config: Config, table: str) -> bool:
    return getattr(config.connections[config.table(table).source], "type", None) == "tracksolid_push"


def _pushes(config: Config, config_path: Path, env: Mapping[str, str], token: str, fake: FakePlatform, say: Say,
            wanted: bool | None) -> PushReport | None:
    if wanted is None:
        try:
            require("serve", "fastapi", "uvicorn", "prometheus_client", what="bronzeline receive")
        except MissingExtra as exc:
            say(f"pushes skipped: {exc} (then run the demo again to see them)")
            return None
    elif not wanted:
        say("pushes skipped")
        return None
    devices = [d for d in fake.devices if d.reporting][:PUSHED_DEVICES]
    started = time.monotonic()
    report = receive_burst(config_path, env, token, burst(devices, fake.now()), say)
    say(f"  the receiver stopped after {time.monotonic() - started:.1f}s (exit {report.exit_code})")
    return report


def table_rows(config: Config, warehouse_dsn: str) -> list[TableRows]:
    """Rows per table: typed, raw, and raw with an error."""
    bronze = config.warehouse.bronze_schema
    found = []
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        for table in config.tables:
            typed = sql.Identifier(bronze, table.name)
            raw = sql.Identifier(bronze, f"{table.name}_raw")
            row = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), count(*), count(*) FILTER "
                                       "(WHERE error IS NOT NULL) FROM {}").format(typed, raw)).fetchone()
            assert row is not None
            found.append(TableRows(table.name, int(row[0]), int(row[1]), int(row[2])))
    return found


def report_lines(result: ApiDemoResult) -> list[str]:
    """What the demo prints after the status and the call log: rows per table, where things are, queries."""
    width = max(len(r.table) for r in result.rows)
    lines = ["", f"{'rows per table':<{width}}     typed       raw   invalid"]
    lines += [f"{r.table:<{width}} {r.typed:>9,} {r.raw:>9,} {r.invalid:>9,}" for r in result.rows]
    lines += ["(raw: every record of every batch as sent, snapshots and lookback re-reads included; invalid: raw",
              " records that could not be typed, with their `error`; a repeated push is raw twice, typed once)"]
    processed = result.directory / "blob" / "fleet" / "processed"
    lines += ["", f"batch files (the audit trail, JSON lines as the platform sent them): {processed}/<table>/",
              f"config: {result.config_path}"]
    if result.stop_command:
        lines += ["", "the warehouse is still running (the fake platform stopped with the demo):",
                  f"  psql \"{result.warehouse_dsn}\"   # bronze, dwh_control",
                  "  the config reads these (the fake's made-up credentials):"]
        lines += [f"  export {name}={shlex.quote(value)}" for name, value in result.env.items()]
        lines += [f"  bronzeline -c {result.config_path} status",
                  f"  stop it with: {result.stop_command}", "", "queries to try in the warehouse:"]
    else:
        lines += ["", "the embedded server is stopped and removed (use --keep to explore it). Queries to try "
                  "with --keep, in the warehouse:"]
    lines += [f"  {query}" for query in API_QUERIES]
    return lines

