"""Attempts: a table's run is tried again after a transient failure (with exponential backoff and
jitter) and fails at once after a terminal one; the table's lock, the migrations check and the
whole-run timeout are taken here, around each attempt.

Every failed attempt stays visible in the run ledger: its row is marked failed with the reason, and
an attempt that failed before it had a row (the source was down, the warehouse was restarting) gets
a row of its own. When the warehouse itself is unreachable, the failure is kept in memory (in the
pass's `PassState`) and written as soon as it is back.

`tables[].timeout` bounds the whole run of a table, every attempt and wait included: when it expires
the queries in flight are cancelled and the run fails without another attempt.
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
from bronzeline.errors import (
    BronzelineError,
    LockBusy,
    SourceError,
    SourceUnreachable,
    Terminal,
    Transient,
    detached,
)
from bronzeline.events import AttemptFailed, EventSink, SucceededAfterRetry, Unrecorded
from bronzeline.pipeline.table_run import RunRequest, TableOutcome, TableRun
from bronzeline.redact import redact
from bronzeline.text import first_line
from bronzeline.warehouse.control import Control

Kind = Literal["transient", "terminal"]

# SQLSTATEs worth another attempt: serialization failure, deadlock, lock timeout, the server shutting
# down or starting up, too many connections. Class 08 is "connection exception".
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "58030"})
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
    """True/False when this exception decides, None when it says nothing. Types and fields only."""
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, Terminal):
        return False
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state == "57014":  # query_canceled: statement_timeout, or a whole-run timeout
            return False
        if state is not None:
            return state in TRANSIENT_SQLSTATES or state.startswith("08")
        if isinstance(exc, psycopg.OperationalError):
            return True  # no SQLSTATE: the connection broke (connect failures are typed in connections.py)
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
    if exc is None:
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


class PassState:
    """What every worker of a pass shares (and a scheduler across its passes): the stop signal, the
    failures the warehouse could not take yet, and the sources that did not answer — so the pass's
    other tables on such a source fail at once instead of waiting out the backoff again."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.notes: list[Note] = []
        self._dead: dict[str, str] = {}
        self.lock = threading.Lock()

    def source_down(self, source: str) -> str | None:
        with self.lock:
            return self._dead.get(source)

    def mark_source_down(self, source: str, table: str) -> None:
        with self.lock:
            self._dead.setdefault(source, table)

    def new_pass(self) -> None:
        with self.lock:
            self._dead.clear()

    def add_note(self, note: Note) -> None:
        with self.lock:
            self.notes.append(note)

    def take_unrecorded(self) -> list[Note]:
        """The failures not yet in the ledger, taken out so that one worker writes each of them once;
        `put_back` returns the ones it could not write."""
        with self.lock:
            taken = [n for n in self.notes if not n.recorded]
            self.notes = []
            return taken

    def put_back(self, notes: list[Note]) -> None:
        with self.lock:
            self.notes.extend(n for n in notes if not n.recorded)

    def unrecorded(self, table: str | None = None) -> list[Note]:
        with self.lock:
            return [n for n in self.notes if not n.recorded and (table is None or n.table == table)]


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
            self.ctx.cancel_all()
            if self._done.wait(1.0):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class Attempts:
    """Runs a table's attempts on one Context: lock, migrations check, timeout, retries, ledger."""

    def __init__(self, table_run: TableRun, state: PassState, policy: RetriesConfig | None = None, *,
                 on_event: EventSink | None = None, rng: random.Random | None = None) -> None:
        self.table_run = table_run
        self.ctx = table_run.ctx
        self.config = table_run.config
        self.state = state
        self.policy = policy or self.config.retries
        self.on_event = on_event or table_run.on_event
        self.rng = rng or random.Random()

    def _safe(self, text: str) -> str:
        return redact(text, self.config.secrets())

    def run(self, request: RunRequest) -> TableOutcome:
        table = self.config.table(request.table)
        dead = self.state.source_down(table.source)
        if dead is not None and dead != table.name and request.extract:
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
                outcome = self._attempt(request, table, attempt)
            finally:
                if dog is not None:
                    dog.stop()
            outcome.attempts = attempt
            if outcome.status != "failed":
                if attempt > 1:
                    self.on_event(SucceededAfterRetry(table.name, outcome.status, attempt, attempts))
                self._keep_failures_visible(failed, outcome)
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
            elif self.state.stop.is_set():
                why = "stopping: not retried"
            elif deadline is not None and time.monotonic() + delay >= deadline:
                why = f"not retried: the next attempt would start after the table's timeout ({table.timeout})"
            shown = "timed out" if timed_out else kind
            detail = f"attempt {attempt} of {attempts} failed ({shown}): {outcome.message}"
            note = Note(table.name, table.mode, attempt, self._safe(f"{detail}; {why or f'retrying in {delay:.1f}s'}"),
                        started, datetime.now(UTC), outcome.current_run)
            failed.append(note)
            self.state.add_note(note)
            self.flush()
            if why:
                if kind == "transient" and not timed_out and isinstance(outcome.error, SourceUnreachable):
                    self.state.mark_source_down(table.source, table.name)
                if attempt > 1 or timed_out or kind == "transient":
                    outcome.message = self._safe(f"{outcome.message} [attempt {attempt} of {attempts}; {why}]")
                self._keep_failures_visible(failed, outcome)
                self._report_unrecorded(table)
                return outcome
            self.on_event(AttemptFailed(table.name, attempt, attempts, shown, outcome.message, delay))
            self.ctx.close()  # every attempt starts on fresh connections
            if self.state.stop.wait(delay):
                outcome.message = self._safe(f"{outcome.message} [attempt {attempt} of {attempts}; stopping]")
                return outcome

    def _source_down(self, table: TableConfig, first: str) -> TableOutcome:
        """A table whose source did not answer for an earlier table of this pass, through all its
        attempts: fail it at once (and say so in the run ledger) instead of waiting again."""
        now = datetime.now(UTC)
        message = self._safe(f"{table.name}: not run: source {table.source!r} did not answer {first}'s "
                             f"{self.policy.attempts} attempt(s) in this pass; run again when it is back")
        self.state.add_note(Note(table.name, table.mode, 1, message, now, now))
        self.flush()
        return TableOutcome(table.name, "failed", message=message, error=SourceUnreachable(message))

    def _attempt(self, request: RunRequest, table: TableConfig, attempt: int) -> TableOutcome:
        try:
            self.ctx.require_migrated()
            control = self.ctx.control
            self._lock(control, table.name, request.chunk)
        except LockBusy as exc:
            return TableOutcome(table.name, "skipped", message=str(exc))
        except (BronzelineError, psycopg.Error) as exc:
            # The warehouse could not be reached, or is not migrated.
            text = first_line(exc)
            message = text if isinstance(exc, BronzelineError) else f"{table.name}: database error: {text}"
            return TableOutcome(table.name, "failed", message=self._safe(message), error=detached(exc))
        try:
            return self.table_run.attempt(request, attempt)
        finally:
            with contextlib.suppress(psycopg.Error, BronzelineError):
                # A lost connection took the lock with it (and WarehouseError: it cannot be reopened).
                self._unlock(control, table.name, request.chunk)

    @staticmethod
    def _lock(control: Control, table: str, chunk: int | None) -> None:
        """The table's lock; for one chunk of a chunked first load, the table's lock shared and the
        chunk's own lock (pipeline/chunk_run.py)."""
        if chunk is None:
            if not control.try_lock(table):
                raise LockBusy(f"{table}: another run holds this table's lock; skipped")
            return
        if not control.try_lock_shared(table):
            raise LockBusy(f"{table}: another run holds this table's lock; chunk {chunk} skipped")
        if not control.try_lock(control.chunk_lock_name(table, chunk)):
            control.unlock_shared(table)
            raise LockBusy(f"{table}: another run holds chunk {chunk}'s lock; skipped")

    @staticmethod
    def _unlock(control: Control, table: str, chunk: int | None) -> None:
        if chunk is None:
            control.unlock(table)
            return
        control.unlock(control.chunk_lock_name(table, chunk))
        control.unlock_shared(table)

    # ------------------------------------------------------------------ the run ledger
    def flush(self) -> None:
        """Write the failures not yet in the run ledger; keep them when the warehouse is still away."""
        pending = self.state.take_unrecorded()
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
            self.state.put_back(pending)

    def _keep_failures_visible(self, failed: list[Note], outcome: TableOutcome) -> None:
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
        left = self.state.unrecorded(table.name)
        if left:
            self.on_event(Unrecorded(table.name, len(left)))


__all__ = ["Attempts", "Note", "PassState", "SourceError", "backoff", "classify"]
