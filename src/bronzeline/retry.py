"""Retries: transient failures are tried again with exponential backoff and jitter, terminal ones fail at once.

A table's run is made of attempts (runner.Runner.run_table, each with its own run row and its
attempt number in `extract_runs.attempts`). Every failed attempt stays visible in the run ledger:
its row is marked failed with the reason, and an attempt that failed before it had a row (the
source was down, the warehouse was restarting) gets a row of its own. When the warehouse itself is
unreachable, the failure is kept in memory and written as soon as it is back.

`tables[].timeout` bounds the whole run of a table, every attempt and wait included: when it
expires the queries in flight are cancelled and the run fails without another attempt.
"""

from __future__ import annotations

import contextlib
import errno
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg

from bronzeline.config.models import RetriesConfig, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BatchError, BronzelineError, ConfigError, MigrationError, SourceError, detached
from bronzeline.redact import redact
from bronzeline.runner import Runner, TableOutcome
from bronzeline.warehouse import migrations

Kind = Literal["transient", "terminal"]

# SQLSTATEs worth another attempt: serialization failure, deadlock, lock timeout, the server shutting
# down or starting up, too many connections. Class 08 is "connection exception".
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "58030"})
# A connection refused for these reasons will be refused again: a config problem, not an outage.
_TERMINAL_CONNECT = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied",
                     "sslmode", "not valid")
# Network failures of the object store's client libraries (botocore, aiohttp), by class name.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "HTTPClientError", "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",
    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
    "ServerTimeoutError", "IncompleteRead", "FSTimeoutError"})
_TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                               errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EREMOTEIO, errno.EBUSY})
_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                                 "RequestTimeTooSkewed", "Throttling", "ThrottlingException"})


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from or while handling (`from None` keeps __context__)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 32:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo += [e for e in (cur.__cause__, cur.__context__) if e is not None]


def _transient_one(exc: BaseException) -> bool | None:
    """True/False when this exception decides, None when it says nothing."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state == "57014":  # query_canceled: statement_timeout, or a whole-run timeout
            return False
        if state is not None:
            return state in TRANSIENT_SQLSTATES or state.startswith("08")
        if isinstance(exc, psycopg.OperationalError):
            text = str(exc).lower()
            return not any(word in text for word in _TERMINAL_CONNECT)
        return None
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(response.get("Error", {}).get("Code") or "")
        return status >= 500 or status == 429 or code in _TRANSIENT_S3_CODES
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return None


def classify(exc: BaseException | None) -> Kind:
    """transient (worth another attempt) or terminal (fails at once)."""
    if exc is None or isinstance(exc, ConfigError | BatchError | MigrationError):
        return "terminal"
    for cause in causes(exc):
        verdict = _transient_one(cause)
        if verdict is not None:
            return "transient" if verdict else "terminal"
    return "terminal"


def backoff(policy: RetriesConfig, attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, capped, with jitter in
    [50 %, 100 %] so that many tables (or many processes) do not retry in step."""
    base = min(policy.max_backoff_seconds, policy.backoff_seconds * 2.0 ** (attempt - 1))
    return float(base * (0.5 + 0.5 * rng.random()))


@dataclass
class Note:
    """A failed attempt, for the run ledger."""

    table: str
    mode: str
    attempt: int
    message: str
    started: datetime
    finished: datetime
    run_id: int | None = None  # its run row, when it got that far
    recorded: bool = field(default=False)


class Watchdog:
    """Cancels the context's queries in flight once `seconds` have passed (and every second after,
    until stopped), so a run that exceeds its timeout stops at its next database round trip."""

    def __init__(self, ctx: Context, seconds: float) -> None:
        self.ctx = ctx
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(seconds,), name="bronzeline-timeout", daemon=True)
        self._thread.start()

    def _watch(self, seconds: float) -> None:
        if self._done.wait(max(seconds, 0.0)):
            return
        self.fired = True
        while True:
            for conn in self.ctx.open_connections():
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=2.0)
            if self._done.wait(1.0):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class Retrier:
    """Runs a table's attempts through `runner`. `stop` (set by a signal) ends the waits between
    attempts early; `notes` carries failures the warehouse could not take yet (share it between
    Retriers of one long-lived process, such as the scheduler)."""

    def __init__(self, runner: Runner, policy: RetriesConfig | None = None, *, stop: threading.Event | None = None,
                 notes: list[Note] | None = None, rng: random.Random | None = None,
                 check_migrations: bool = False) -> None:
        self.runner = runner
        self.policy = policy or runner.config.retries
        self.stop = stop or threading.Event()
        self.notes = notes if notes is not None else []
        self.rng = rng or random.Random()
        self.check_migrations = check_migrations
        self.dead_sources: dict[str, str] = {}  # source -> the table that gave up on it in this pass

    @property
    def ctx(self) -> Context:
        return self.runner.ctx

    def _say(self, table: str, message: str) -> None:
        self.runner.on_event(table, message)

    def _safe(self, text: str) -> str:
        return redact(text, self.runner.config.secrets())

    def run_table(self, table: TableConfig) -> TableOutcome:
        dead = self.dead_sources.get(table.source)
        if dead is not None:
            return self._source_down(table, dead)
        attempts = self.policy.attempts
        timeout = table.timeout_interval
        deadline = time.monotonic() + timeout.total_seconds() if timeout else None
        failed: list[Note] = []
        attempt = 0
        while True:
            attempt += 1
            self.flush()
            started = datetime.now(UTC)
            dog = Watchdog(self.ctx, deadline - time.monotonic()) if deadline is not None else None
            try:
                outcome = self._attempt(table, attempt)
            finally:
                if dog is not None:
                    dog.stop()
            outcome.attempts = attempt
            if outcome.status != "failed":
                if attempt > 1:
                    self._say(table.name, f"{outcome.status} on attempt {attempt} of {attempts}")
                self._keep_failures_visible(table, failed, outcome)
                return outcome
            timed_out = dog is not None and dog.fired
            kind = classify(outcome.error)
            delay = backoff(self.policy, attempt, self.rng)
            why = ""
            if timed_out:
                why = f"the run timed out after {table.timeout} (tables[].timeout); not retried"
            elif kind == "terminal":
                why = "not retried: trying again does not help; fix the cause and run again"
            elif attempt >= attempts:
                why = f"gave up after {attempts} attempts (retries.attempts)"
            elif self.stop.is_set():
                why = "stopping: not retried"
            elif deadline is not None and time.monotonic() + delay >= deadline:
                why = f"not retried: the next attempt would start after the table's timeout ({table.timeout})"
            detail = f"attempt {attempt} of {attempts} failed ({'timed out' if timed_out else kind}): {outcome.message}"
            note = Note(table.name, table.mode, attempt, self._safe(f"{detail}; {why or f'retrying in {delay:.1f}s'}"),
                        started, datetime.now(UTC), outcome.current_run)
            failed.append(note)
            self.notes.append(note)
            self.flush()
            self._say(table.name, note.message)
            if why:
                if kind == "transient" and not timed_out and _cannot_connect(outcome.error):
                    self.dead_sources[table.source] = table.name  # the pass's other tables fail at once
                if attempts > 1 or timed_out or kind == "transient":
                    outcome.message = self._safe(f"{outcome.message} [attempt {attempt} of {attempts}; {why}]")
                self._keep_failures_visible(table, failed, outcome)
                self._report_unrecorded(table)
                return outcome
            self.ctx.close()  # every attempt starts on fresh connections
            if self.stop.wait(delay):
                outcome.message = self._safe(f"{outcome.message} [attempt {attempt} of {attempts}; stopping]")
                return outcome

    def _source_down(self, table: TableConfig, first: str) -> TableOutcome:
        """A table whose source did not answer for an earlier table of this pass, through all its
        attempts: fail it at once (and say so in the run ledger) instead of waiting again."""
        now = datetime.now(UTC)
        why = self._safe(f"not run: source {table.source!r} did not answer {first}'s {self.policy.attempts} "
                         "attempt(s) in this pass; run again when it is back")
        message = f"{table.name}: {why}"
        note = Note(table.name, table.mode, 1, message, now, now)
        self.notes.append(note)
        self.flush()
        self._say(table.name, why)
        return TableOutcome(table.name, "failed", message=message, error=SourceError(message))

    def _attempt(self, table: TableConfig, attempt: int) -> TableOutcome:
        self.runner.attempt = attempt
        try:
            if self.check_migrations:
                migrations.require_current(self.ctx.warehouse, self.runner.config.warehouse.control_schema)
            return self.runner.run_table(table)
        except (BronzelineError, psycopg.Error) as exc:
            # Before the table's try block: the warehouse could not be reached, or is not migrated.
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = text if isinstance(exc, BronzelineError) else f"{table.name}: database error: {text}"
            return TableOutcome(table.name, "failed", message=self._safe(message), error=detached(exc))

    # ------------------------------------------------------------------ the run ledger
    def flush(self) -> None:
        """Write the failures not yet in the run ledger; keep them when the warehouse is still away."""
        pending = [n for n in self.notes if not n.recorded]
        if not pending:
            return
        try:
            control = self.ctx.control
            for note in pending:
                if note.run_id is not None:
                    control.mark_failed(note.run_id, note.message)
                    if control.run_status(note.run_id) == "failed":
                        note.recorded = True
                        continue
                control.record_failure(note.table, note.mode, note.attempt, note.message, note.started, note.finished)
                note.recorded = True
        except (BronzelineError, psycopg.Error):
            self.ctx.close()
        finally:
            self.notes[:] = [n for n in self.notes if not n.recorded]

    def _keep_failures_visible(self, table: TableConfig, failed: list[Note], outcome: TableOutcome) -> None:
        """A failed attempt's batch may be loaded by a later attempt, which marks its row loaded: record
        the failure in a row of its own so that it stays in the history."""
        reloaded = [n for n in failed if n.recorded and n.run_id is not None and n.run_id in outcome.runs]
        if not reloaded:
            return
        try:
            control = self.ctx.control
            for note in reloaded:
                assert note.run_id is not None
                control.update_run(note.run_id, attempts=outcome.attempts)
                control.record_failure(note.table, note.mode, note.attempt,
                                       f"{note.message} (its batch was loaded by run {note.run_id} on attempt "
                                       f"{outcome.attempts})", note.started, note.finished)
        except (BronzelineError, psycopg.Error):
            self.ctx.close()

    def _report_unrecorded(self, table: TableConfig) -> None:
        left = [n for n in self.notes if n.table == table.name and not n.recorded]
        if left:
            self._say(table.name, f"{len(left)} failed attempt(s) not yet in the run ledger (the warehouse is "
                                  "unreachable); they are written when it is back")


def _cannot_connect(error: BaseException | None) -> bool:
    """Did the attempt fail to open its source connection (rather than fail inside a run)?"""
    return isinstance(error, SourceError) and str(error).startswith("cannot connect to")


def run_tables(runner: Runner, names: list[str] | None = None, *, stop: threading.Event | None = None,
               ) -> list[TableOutcome]:
    """`bronzeline run`: each table once, with the config's retries and timeouts."""
    retrier = Retrier(runner, stop=stop)
    outcomes = runner.run(names, retrier.run_table)
    for note in retrier.notes:
        if not note.recorded:
            runner.on_event(note.table, f"not in the run ledger (the warehouse was unreachable): {note.message}")
    return outcomes
