"""The one run path. `run`, `run -j`, `backfill`, `reseed`, `schedule` (and orchestrators) all call
`run_tables`, which owns the workers, the per-table locks, the attempts and timeouts, and the
migrations check (pipeline/attempts.py), around one attempt of one table (pipeline/table_run.py).

Each worker has its own Context (its own source and warehouse connections); nothing is shared between
workers but the config, the callbacks and the pass's state. The per-table advisory lock keeps one run
of a table at a time, across workers and across processes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import psycopg

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, ConfigError
from bronzeline.events import EventSink, Progress, ignore
from bronzeline.pipeline import chunks
from bronzeline.pipeline.attempts import Attempts, PassState, classify
from bronzeline.pipeline.table_run import RunRequest, TableOutcome, TableRun
from bronzeline.sources.base import Window


def run_tables(config: Config, requests: Sequence[str | RunRequest] | None = None, *, workers: int = 1,
               on_event: EventSink | None = None, on_progress: Progress | None = None,
               state: PassState | None = None, ctx: Context | None = None, debug: bool = False,
               ride_out_warehouse_outage: bool = False) -> list[TableOutcome]:
    """Each requested table once (all tables by default), `workers` at a time, with the config's
    retries and timeouts. Outcomes come back in the order asked; failures are in them, not raised.
    Raises when the warehouse is not migrated or refuses the login (nothing could run), and when it
    does not answer — unless `ride_out_warehouse_outage` (the scheduler): then each table's attempts
    retry and its failures are written to the ledger once the warehouse is back. `ctx` lends the
    first worker its connections (a long-lived caller such as the scheduler); it stays open."""
    asked = requests or [t.name for t in config.tables]
    todo_list = [r if isinstance(r, RunRequest) else RunRequest(r) for r in asked]
    todo_list = [replace(r, table=config.table(r.table).name) for r in todo_list]  # unknown names: ConfigError
    state = state or PassState()  # a caller that passes its own starts each pass with state.new_pass()
    first = ctx or Context(config)
    try:
        _require_migrated(first, ride_out_warehouse_outage)
    except BaseException:
        if ctx is None:
            first.close()
        raise
    # cdc tables have no window: their slot's waiting changes are applied (pipeline/cdc_stream.py)
    cdc = [r.table for r in todo_list if config.table(r.table).mode == "cdc"]
    if any(chunks.is_chunked(config.table(r.table)) for r in todo_list):
        try:
            todo_list = chunks.expand(first, todo_list, on_event or ignore)
        except BaseException:
            if ctx is None:
                first.close()
            raise
    results: dict[tuple[str, int | None], TableOutcome] = {}
    spans: dict[tuple[str, int | None], tuple[float, float]] = {}
    if cdc:
        from bronzeline.pipeline.cdc_stream import run_cdc

        began = time.monotonic()
        for outcome in run_cdc(config, cdc, on_event=on_event, stop=state.stop):
            results[(outcome.table, None)] = outcome
            spans[(outcome.table, None)] = (began, time.monotonic())
    todo: queue.Queue[RunRequest] = queue.Queue()
    for request in todo_list:
        if request.table not in cdc:
            todo.put(request)
    errors: list[BaseException] = []

    def work(wctx: Context) -> None:
        try:
            with contextlib.nullcontext(wctx) if wctx is ctx else wctx:
                attempts = Attempts(TableRun(wctx, on_event, on_progress, debug=debug), state)
                while not state.stop.is_set():
                    try:
                        request = todo.get_nowait()
                    except queue.Empty:
                        return
                    began = time.monotonic()
                    results[(request.table, request.chunk)] = attempts.run(request)
                    spans[(request.table, request.chunk)] = (began, time.monotonic())
                attempts.flush()
        except BaseException as exc:  # surfaced in the calling thread
            errors.append(exc)

    count = max(1, min(workers, len(todo_list) - len(cdc)))
    if count == 1:
        work(first)
    else:
        contexts = [first] + [Context(config) for _ in range(count - 1)]
        threads = [threading.Thread(target=work, args=(c,), name=f"bronzeline-worker-{i}")
                   for i, c in enumerate(contexts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return _by_table(todo_list, results, spans)


def _by_table(asked: list[RunRequest], results: dict[tuple[str, int | None], TableOutcome],
              spans: dict[tuple[str, int | None], tuple[float, float]]) -> list[TableOutcome]:
    """One outcome per table, in the order asked: a table's chunk runs add up to one (failed when a
    chunk failed; its seconds from the first chunk's start to the last one's end)."""
    out: list[TableOutcome] = []
    seen: dict[str, list[tuple[str, int | None]]] = {}
    for r in asked:
        if (r.table, r.chunk) in results:
            seen.setdefault(r.table, []).append((r.table, r.chunk))
    for table, keys in seen.items():
        if len(keys) == 1 and keys[0][1] is None:
            out.append(results[keys[0]])
            continue
        parts = [results[k] for k in keys]
        merged = TableOutcome(table, "loaded")
        for part in parts:
            merged.runs += part.runs
            merged.files += part.files
            merged.rows_extracted += part.rows_extracted
            merged.rows_loaded += part.rows_loaded
            merged.rows_skipped += part.rows_skipped
            merged.rows_deleted += part.rows_deleted
            merged.window = merged.window or part.window
            merged.attempts = max(merged.attempts, part.attempts)
        failed = [p for p in parts if p.status == "failed"]
        if failed:
            merged.status, merged.error = "failed", failed[0].error
            merged.message = "; ".join(p.message for p in failed)
        elif all(p.status == "skipped" for p in parts):
            merged.status, merged.message = "skipped", parts[0].message
        merged.seconds = max(spans[k][1] for k in keys) - min(spans[k][0] for k in keys)
        out.append(merged)
    return out


def _require_migrated(ctx: Context, ride_out_outage: bool) -> None:
    try:
        ctx.require_migrated()
    except (BronzelineError, psycopg.Error) as exc:  # not migrated, a refused login: terminal
        if not ride_out_outage or classify(exc) == "terminal":
            raise
        ctx.close()


def backfill(config: Config, name: str, since: datetime, until: datetime | None = None, *,
             on_event: EventSink | None = None, debug: bool = False) -> TableOutcome:
    """Move the watermark back to `since` (the next run re-reads from there); with `until`, run the
    window (since, until] now and leave the watermark where it is."""
    table = config.table(name)
    if table.mode != "incremental":
        raise ConfigError(f"{name} is a snapshot table: every run reloads it whole; use `bronzeline run {name}`")
    if until is not None and until <= since:
        raise ConfigError("--until must be later than --since")
    request = (RunRequest(table.name, window=Window(since, until)) if until is not None
               else RunRequest(table.name, rewind=True, rewind_to=since, extract=False))
    [outcome] = run_tables(config, [request], on_event=on_event, debug=debug)
    return outcome


def reseed(config: Config, name: str, *, on_event: EventSink | None = None, debug: bool = False,
           workers: int = 1) -> TableOutcome:
    """Back-fill all history: forget the watermark and run the table now, in one locked run. A chunked
    table forgets its watermark (and any chunked load under way) first, then loads anew in chunks,
    `workers` at a time."""
    table = config.table(name)
    if chunks.is_chunked(table):
        [forgot] = run_tables(config, [RunRequest(table.name, rewind=True, rewind_to=None, extract=False)],
                              on_event=on_event, debug=debug)
        if forgot.status != "loaded":
            return forgot
        [outcome] = run_tables(config, [table.name], workers=workers, on_event=on_event, debug=debug)
        return outcome
    request = RunRequest(table.name, rewind=table.mode == "incremental", rewind_to=None)
    [outcome] = run_tables(config, [request], on_event=on_event, debug=debug)
    return outcome


def parse_timestamp(text: str, config: Config) -> datetime:
    """ISO-8601; without an offset it is in the config's time zone."""
    try:
        value = datetime.fromisoformat(text.strip())  # accepts "T" or a space between date and time
    except ValueError:
        raise ConfigError(f"{text!r} is not an ISO-8601 timestamp; write e.g. 2026-11-01T00:00:00+03:00") from None
    return value if value.tzinfo else value.replace(tzinfo=config.tz)


__all__ = ["PassState", "RunRequest", "TableOutcome", "backfill", "chunks", "parse_timestamp", "reseed", "run_tables"]
