"""Chunked first loads: planning. A table with `chunks: N` (or `chunk_rows: N`) whose first load is
pending (its watermark was never set, or `reseed` cleared it) is loaded as N key ranges instead of one
window. The plan, made once and kept in the control schema, fixes:

- one upper bound U for every chunk, read from the source exactly as a normal run reads its bound
  (snapshot-safe: every row with a watermark at or below U is committed before U is chosen, so a
  chunk read at any later moment sees all of its rows);
- the key range of each chunk, cut from the source's key distribution; the ranges partition the key
  space (the first is open below, the last above), so every row belongs to exactly one chunk.

Each chunk is then its own window (none, U] ∩ its key range, batch file and run row; the watermark
moves to U in the load transaction of the plan's last chunk (pipeline/chunk_run.py, the loader).
Rows committed later with a watermark above U are read by the next ordinary run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg

from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, SourceError
from bronzeline.events import BoundHeldBack, ChunksPlanned, EventSink, ignore
from bronzeline.sources.base import Source
from bronzeline.warehouse.control_chunks import ChunkPlan, ChunkPlans, ChunkProgress

if TYPE_CHECKING:
    from bronzeline.pipeline.table_run import RunRequest

MAX_CHUNKS = 4096


def is_chunked(table: TableConfig) -> bool:
    return table.mode == "incremental" and (table.chunks is not None or table.chunk_rows is not None)


def chunk_count(config: Config, table: TableConfig | str, source: Source) -> int:
    """How many chunks the table's chunked first load has: `chunks:` as given, or the row estimate
    over `chunk_rows:` (at least 1); 0 when the table is not chunked. An open plan keeps the count it
    was made with (`open_plan(...).count`); this is what a new plan would get."""
    table = config.table(table) if isinstance(table, str) else table
    if not is_chunked(table):
        return 0
    if table.chunks is not None:
        return table.chunks
    assert table.chunk_rows is not None
    return max(1, min(MAX_CHUNKS, math.ceil(source.row_estimate(table) / table.chunk_rows)))


def plans(ctx: Context) -> ChunkPlans:
    return ChunkPlans(ctx.warehouse, ctx.config.warehouse.control_schema)


def open_plan(ctx: Context, table: str) -> ChunkPlan | None:
    return plans(ctx).open_plan(table)


def progress(ctx: Context, tables: list[str]) -> dict[str, ChunkProgress]:
    """Open plans by table, for `status`."""
    return plans(ctx).progress(tables)


def pending_chunks(ctx: Context, table: TableConfig) -> list[int] | None:
    """The chunks a chunked first load still has to run (all of them when it is not planned yet), or
    None when the table has no chunked first load pending."""
    if not is_chunked(table):
        return None
    plan = open_plan(ctx, table.name)
    if plan is not None:
        return plan.pending
    if ctx.control.watermark(table.name).last_extracted_at is not None:
        return None
    return list(range(1, chunk_count(ctx.config, table, ctx.source(table.source)) + 1))


def ensure_plan(ctx: Context, table: TableConfig, on_event: EventSink = ignore) -> ChunkPlan | None:
    """The table's open plan; a new one when its first load is pending and none exists; None when
    there is no chunked first load to do. Processes that ask at once wait for one to make it."""
    if not is_chunked(table):
        return None
    chunk_plans = plans(ctx)
    plan = chunk_plans.open_plan(table.name)
    if plan is not None or ctx.control.watermark(table.name).last_extracted_at is not None:
        return plan
    source = ctx.source(table.source)
    with ctx.warehouse.transaction():
        chunk_plans.lock_creation(table.name)
        plan = chunk_plans.open_plan(table.name)
        if plan is not None or ctx.control.watermark(table.name).last_extracted_at is not None:
            return plan
        problems = source.check(table, source.describe(table))
        if problems:
            raise SourceError("; ".join(problems))
        estimate = source.row_estimate(table) if table.chunk_rows is not None else None
        count = chunk_count(ctx.config, table, source)
        bound = source.upper_bound(table)  # before any chunk's snapshot: every chunk reads up to it
        cuts = source.key_boundaries(table, count)
        chunk_plans.create(table.name, bound, list(table.key), cuts, count)
    if bound.holder:
        on_event(BoundHeldBack(table.name, bound.holdback.total_seconds(), bound.holder))
    on_event(ChunksPlanned(table.name, count, bound.upper, estimate))
    return chunk_plans.open_plan(table.name)


def expand(ctx: Context, requests: Sequence[RunRequest], on_event: EventSink = ignore) -> list[RunRequest]:
    """Plain runs of tables with a chunked first load pending become one request per chunk not yet
    loaded (so `run -j N` spreads them over its workers). When the plan cannot be made here (the source
    does not answer…), the plain request stays: its own attempt makes the plan, with retries and a
    ledger row, and runs the chunks one after another."""
    out: list[RunRequest] = []
    for request in requests:
        table = ctx.config.table(request.table)
        plain = request.chunk is None and request.window is None and request.extract and not request.rewind
        if plain and is_chunked(table):
            try:
                plan = ensure_plan(ctx, table, on_event)
            except (BronzelineError, psycopg.Error):
                plan = None
                ctx.drop_source(table.source)
            if plan is not None and plan.pending:
                out += [replace(request, chunk=k) for k in plan.pending]
                continue
        out.append(request)
    return out
