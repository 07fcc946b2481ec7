"""The commands' side of change data capture: `run` applies what is waiting and exits, `stream` applies
continuously, `resync` recovers a lost slot. Each works per source (one slot), under the slot's lock;
every cdc table of that source is applied together (they share the slot)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence

import psycopg

from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, ConfigError, LockBusy, SlotLost, detached
from bronzeline.events import EventSink
from bronzeline.pipeline.attempts import backoff, classify
from bronzeline.pipeline.cdc_run import ChangeReader, SlotApplier, open_changes, slot_lock_key
from bronzeline.pipeline.table_run import TableOutcome
from bronzeline.redact import redact
from bronzeline.sources.cdc.changes import lsn_text
from bronzeline.text import first_line

Opener = Callable[[Config, str], ChangeReader]


def cdc_sources(config: Config, names: Sequence[str] | None) -> dict[str, list[TableConfig]]:
    """The sources (slots) behind the named cdc tables (all cdc tables by default), with the tables asked."""
    tables = [config.table(n) for n in names] if names else [t for t in config.tables if t.mode == "cdc"]
    found: dict[str, list[TableConfig]] = {}
    for table in tables:
        if table.mode != "cdc":
            raise ConfigError(f"{table.name} is a {table.mode} table; `stream` and `resync` are for mode: cdc tables")
        found.setdefault(table.source, []).append(table)
    return found


def _message(config: Config, exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, BronzelineError) else f"database error: {first_line(exc)}"
    return redact(text, config.secrets())


class _Locked:
    """A Context holding the slot's lock and an open ChangeReader."""

    def __init__(self, config: Config, source: str, on_event: EventSink | None, opener: Opener) -> None:
        self.ctx = Context(config)
        self.applier = SlotApplier(self.ctx, source, on_event)
        self.reader: ChangeReader | None = None
        try:
            self.ctx.require_migrated()
            if not self.ctx.control.try_lock(slot_lock_key(f"{source}:{config.slot_name()}")):
                names = ", ".join(t.name for t in self.applier.tables)
                raise LockBusy(f"{names}: another process applies slot {config.slot_name()}; skipped")
            self.reader = opener(config, source)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
        self.ctx.close()  # the lock goes with the warehouse session


def _fail_outcomes(applier: SlotApplier | None, tables: list[TableConfig], exc: BaseException, config: Config
                   ) -> list[TableOutcome]:
    message = _message(config, exc)
    out = []
    for i, table in enumerate(tables):
        outcome = applier.outcomes.get(table.name) if applier else None
        outcome = outcome or TableOutcome(table.name, "failed")
        outcome.status, outcome.error = "failed", detached(exc)
        outcome.message = message if i == 0 else f"{table.name}: not applied: it shares the slot ({tables[0].name})"
        if applier is not None and outcome.current_run is not None:
            with contextlib.suppress(Exception):
                applier.ctx.control.mark_failed(outcome.current_run, message)
        out.append(outcome)
    return out


def run_cdc(config: Config, names: Sequence[str] | None = None, *, on_event: EventSink | None = None,
            stop: threading.Event | None = None, opener: Opener = open_changes) -> list[TableOutcome]:
    """Apply what waits in each slot, up to the WAL position read at the start, then return (`run`).
    Transient failures are retried like a table run's."""
    stop = stop or threading.Event()
    outcomes: list[TableOutcome] = []
    rng = random.Random()
    for source, asked in cdc_sources(config, names).items():
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            held: _Locked | None = None
            try:
                held = _Locked(config, source, on_event, opener)
                applier, reader = held.applier, held.reader
                assert reader is not None
                applier.recover(reader)
                applier.join_new(reader)
                health = applier.align(reader)
                busy = applier.drain(reader, until_lsn=health.current_lsn, stop=stop)
                if not busy and applier.heartbeat_due():
                    applier.heartbeat(reader)
                for outcome in applier.outcomes.values():
                    outcome.seconds = time.monotonic() - started
                outcomes += [applier.outcomes[t.name] for t in asked]
                break
            except LockBusy as exc:
                outcomes += [TableOutcome(t.name, "skipped", message=str(exc)) for t in asked]
                break
            except (BronzelineError, psycopg.Error) as exc:
                if classify(exc) == "transient" and attempt < config.retries.attempts and not stop.is_set():
                    stop.wait(backoff(config.retries, attempt, rng))
                    continue
                outcomes += _fail_outcomes(held.applier if held else None, asked, exc, config)
                break
            finally:
                if held is not None:
                    held.close()
    return outcomes


def stream(config: Config, names: Sequence[str] | None = None, *, on_event: EventSink | None = None,
           on_line: Callable[[str], None] = lambda _l: None, stop: threading.Event | None = None,
           opener: Opener = open_changes) -> None:
    """Apply changes continuously until `stop` is set (a signal): the page under way is finished first.
    Transient failures (a source or warehouse restart) are waited out; anything else raises."""
    stop = stop or threading.Event()
    sources = cdc_sources(config, names)
    held: dict[str, _Locked] = {}
    failures = 0
    rng = random.Random()
    try:
        while not stop.is_set():
            busy = False
            try:
                for source in sources:
                    if source not in held:
                        held[source] = _Locked(config, source, on_event, opener)
                        unit = held[source]
                        assert unit.reader is not None
                        unit.applier.recover(unit.reader)
                        unit.applier.join_new(unit.reader)
                        unit.applier.align(unit.reader)
                    unit = held[source]
                    assert unit.reader is not None
                    if unit.applier.drain(unit.reader, until_lsn=None, stop=stop):
                        busy = True
                    elif unit.applier.heartbeat_due():
                        unit.applier.heartbeat(unit.reader)
                failures = 0
            except (BronzelineError, psycopg.Error) as exc:
                if isinstance(exc, LockBusy) or classify(exc) != "transient":
                    raise
                failures += 1
                delay = backoff(config.retries, min(failures, 10), rng)
                on_line(f"stream: {_message(config, exc)}; trying again in {delay:.1f}s")
                for unit in held.values():
                    unit.close()
                held.clear()
                stop.wait(delay)
                continue
            if not busy:
                stop.wait(config.cdc.poll_seconds)
    finally:
        for unit in held.values():
            unit.close()


def resync(config: Config, names: Sequence[str], *, on_event: EventSink | None = None,
           opener: Opener = open_changes) -> list[TableOutcome]:
    """Take new snapshots of the tables (rows gone from the source are deleted from bronze). When the slot is
    lost, a new one is created and every table on it is snapshotted again; the gap goes into the ledger."""
    outcomes: list[TableOutcome] = []
    for source, asked in cdc_sources(config, names).items():
        held = _Locked(config, source, on_event, opener)
        try:
            applier, reader = held.applier, held.reader
            assert reader is not None
            cdc = applier.cdc
            state = cdc.slot(applier.slot)
            joined = cdc.tables(applier.slot)
            # where the stream stood: the last applied commit, else where the tables joined it
            applied = state.applied_lsn if state and state.applied_lsn else max(
                (t.start_lsn for t in joined.values()), default=None)
            if not reader.slot_exists():
                tables = [t for t in applier.tables if t in asked or t.name in joined]
                if joined:
                    cdc.set_state(list(joined), "lost", f"replication slot {applier.slot} is gone; resync under way")
                gap = (f"resync: replication slot {applier.slot} was lost; changes committed after "
                       f"{lsn_text(applied) if applied else 'the last applied one'} were not streamed: this snapshot "
                       "replaced them (rows gone from the source deleted)")
                with reader.create_slot() as snap:
                    applier.snapshot(snap, tables, alone=False, note=gap, gap_from=applied)
            else:
                with contextlib.suppress(SlotLost):
                    applier.recover(reader)
                tables = asked
                with reader.snapshot_alone() as snap:
                    applier.snapshot(snap, tables, alone=True, note="resync: a new snapshot",
                                     gap_from=applied)
            outcomes += [applier.outcomes[t.name] for t in tables]
        finally:
            held.close()
    return outcomes


__all__ = ["cdc_sources", "resync", "run_cdc", "stream"]
