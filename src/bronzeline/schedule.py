"""`bronzeline schedule`: run the tables on their cron expressions, in the config's time zone.

Each table runs on `tables[].cron`, else on `schedule.cron`. Tables run one after another in this
process (never two runs of one table at once; other processes are kept out by the per-table lock),
each with the config's retries and timeout. A slot missed while the scheduler was down, or while
another table's run overran, is run once as soon as possible (the run ledger tells when each table
last started); slots are never run twice. `stop()` (SIGTERM, SIGINT) lets the current table finish
and starts nothing new. After each pass of loads, the models are built (`bronzeline build`) when the
config has a `models:` section with `schedule_build` on, so marts follow their sources; a failed build
is logged and the scheduler goes on.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.cron import next_fire, prev_fire
from bronzeline.errors import BronzelineError, ConfigError
from bronzeline.events import BatchLoaded, Event, EventSink
from bronzeline.pipeline import PassState, TableOutcome, run_tables
from bronzeline.text import first_line

if TYPE_CHECKING:
    from bronzeline.models.outcome import BuildReport, CheckResult

Log = Callable[[str], None]
Builder = Callable[[Config], "BuildReport"]
_MAX_SLEEP = 1.0  # wake at least this often to notice stop()


def table_crons(config: Config, *, required: bool = True) -> dict[str, str | None]:
    """table -> its cron expression (its own, else schedule.cron)."""
    crons = {t.name: t.cron or config.schedule.cron for t in config.tables}
    missing = [name for name, cron in crons.items() if cron is None]
    if required and missing:
        raise ConfigError(f"no schedule for {', '.join(missing)}: set schedule.cron (e.g. '0 5,8,11,14,17,20,23 * * *'"
                          ") or tables[].cron; or call `bronzeline schedule --once` from your own cron")
    return crons




def due(config: Config, now: datetime, last_started: dict[str, datetime]) -> list[TableConfig]:
    """Tables whose latest slot (at or before `now`) came after their latest run started. A table that
    never ran is due; so is every table when there is no cron at all (cron-driven setups)."""
    crons = table_crons(config, required=False)
    found = []
    for table in config.tables:
        cron = crons[table.name]
        last = last_started.get(table.name)
        if cron is None or last is None or prev_fire(cron, now, config.tz) > last:
            found.append(table)
    return found


def describe(outcome: TableOutcome) -> str:
    """One line per table run, for the log."""
    tries = f", attempt {outcome.attempts}" if outcome.attempts > 1 else ""
    if outcome.status == "skipped":
        return outcome.message
    if outcome.status == "failed":
        return f"{outcome.table}: failed{tries}: {outcome.message}"
    deleted = f", {outcome.rows_deleted:,} deleted" if outcome.rows_deleted else ""
    return (f"{outcome.table}: loaded {outcome.rows_loaded:,} of {outcome.rows_extracted:,} rows "
            f"({outcome.rows_skipped:,} already present{deleted}) in {outcome.seconds:.2f}s{tries}")


def describe_build(report: BuildReport) -> list[str]:
    """One line per model (built, failed, blocked) and per check that failed or warned, for the log."""
    lines = [_check_line(c) for c in report.sources if c.status != "pass"]
    for m in report.models:
        took = f" in {m.seconds:.2f}s"
        why = m.message.removeprefix(f"{m.model}: ")  # the line names the model already
        if m.status == "built":
            rows = f" {m.rows:,} rows" if m.rows is not None else ""
            lines.append(f"{m.model}: built{rows}{took}")
        elif m.status == "failed":
            lines.append(f"{m.model}: failed{took}: {why}")
        else:
            lines.append(f"{m.model}: {m.status}: {why}")
        lines += [_check_line(c) for c in m.checks if c.status != "pass"]
    return lines


def _check_line(check: CheckResult) -> str:
    spec = check.spec
    verdict = "failed" if check.status == "fail" else "warned"
    why = f" ({first_line(check.error)})" if check.error else ""
    return (f"{spec.relation}: check {spec.name} {verdict}: {check.failing_rows:,} of {check.total_rows:,} rows"
            f"{why}")


class Scheduler:
    def __init__(self, config: Config, log: Log, on_event: EventSink | None = None,
                 clock: Callable[[], datetime] | None = None, build: Builder | None = None) -> None:
        self.config = config
        self.build = build  # None: bronzeline.models.build.build
        self.log = log
        self.on_event = on_event or self._log_event
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stopping = threading.Event()
        self.state = PassState(self.stopping)  # keeps failures the warehouse could not take yet
        self.outcomes: list[TableOutcome] = []

    def _log_event(self, event: Event) -> None:
        if not isinstance(event, BatchLoaded):  # describe() logs the table's total
            self.log(f"{event.table}: {event.render()}")

    def stop(self) -> None:
        self.stopping.set()

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> list[TableOutcome]:
        """Run the tables that are due now (all of them when no cron is set), then return."""
        now = self.clock()
        try:
            with Context(self.config) as ctx:
                last = ctx.control.last_started([t.name for t in self.config.tables])
        except (BronzelineError, psycopg.Error) as exc:
            self.log(f"cannot read the run ledger ({first_line(exc)}); running every table")
            last = {}
        tables = due(self.config, now, last)
        if not tables:
            self.log("nothing due")
            return []
        return self.run_tables(tables)

    def run_tables(self, tables: list[TableConfig]) -> list[TableOutcome]:
        """Each table once, with retries, one after another; stops between tables when asked to."""
        outcomes: list[TableOutcome] = []
        self.state.new_pass()
        try:
            with Context(self.config) as ctx:
                for table in tables:
                    if self.stopping.is_set():
                        self.log(f"{table.name}: not started (stopping)")
                        continue
                    self.log(f"{table.name}: run started")
                    outcomes += run_tables(self.config, [table.name], on_event=self.on_event, state=self.state,
                                           ctx=ctx, ride_out_warehouse_outage=True)
                    self.log(describe(outcomes[-1]))
        except BronzelineError as exc:  # e.g. the warehouse is not migrated: say so, try again next time
            self.log(f"error: {first_line(exc)}")
        except Exception as exc:  # never let one pass end the scheduler
            self.log(f"internal error: {type(exc).__name__}: {first_line(exc)}\n{traceback.format_exc()}")
        self.outcomes += outcomes
        self.build_models()
        return outcomes

    def build_models(self) -> BuildReport | None:
        """Build the models after a pass of loads (when configured to); logs and never raises."""
        models = self.config.models
        if models is None or not models.schedule_build or self.stopping.is_set():
            return None
        self.log("models: build started")
        try:
            if self.build is not None:
                report = self.build(self.config)
            else:
                from bronzeline.models.build import build

                report = build(self.config)
        except BronzelineError as exc:  # e.g. a model file with an error: say so, try again next pass
            self.log(f"models: error: {first_line(exc)}")
            return None
        except Exception as exc:  # a build never ends the scheduler
            self.log(f"models: internal error: {type(exc).__name__}: {first_line(exc)}\n{traceback.format_exc()}")
            return None
        for line in describe_build(report):
            self.log(line)
        built = sum(m.status == "built" for m in report.models)
        self.log(f"models: {built} of {len(report.models)} built" + ("" if report.ok else "; see the failures above"))
        return report

    # ------------------------------------------------------------------ the loop
    def run_forever(self) -> None:
        crons = {k: v for k, v in table_crons(self.config).items() if v is not None}
        tz = self.config.tz
        for table in self.config.tables:
            self.log(f"{table.name}: on '{crons[table.name]}' ({self.config.timezone}); next at "
                     f"{next_fire(crons[table.name], self.clock(), tz).isoformat()}")
        first = self.run_once()  # catch up slots missed while no scheduler ran
        del first
        upcoming = {name: next_fire(cron, self.clock(), tz) for name, cron in crons.items()}
        while not self.stopping.is_set():
            now = self.clock()
            ready = [t for t in self.config.tables if upcoming[t.name] <= now]
            if ready:
                self.run_tables(ready)
                after = self.clock()
                for table in ready:  # slots missed while running are coalesced into the next one
                    upcoming[table.name] = next_fire(crons[table.name], max(after, upcoming[table.name]), tz)
                continue
            wait = (min(upcoming.values()) - now).total_seconds()
            self.stopping.wait(min(max(wait, 0.01), _MAX_SLEEP))
        unrecorded = self.state.unrecorded()
        for note in unrecorded:
            self.log(f"{note.table}: not in the run ledger (the warehouse was unreachable): {note.message}")
        self.log("stopped")

