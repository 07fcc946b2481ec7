"""Running chunks of a chunked first load (pipeline/chunks.py plans them), as steps of a table run.

A chunk run (`run TABLE --chunk K`, or one of the requests `run` makes of a pending plan) holds the
table's lock shared and the chunk's own lock, so chunks of one table run side by side, in one process
or many, while a plain run of the table (which takes the table's lock exclusive) waits for none of
them. It touches only its own chunk's files: the leftovers and pending batches of that chunk's runs,
then, unless the chunk is loaded by now, one new window (none, U] ∩ the chunk's key range.

A plain run that finds a chunked first load pending (it holds the table's lock exclusive: no chunk
runs meanwhile) runs the chunks not yet loaded one after another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bronzeline.batches.area import Area
from bronzeline.config.models import TableConfig
from bronzeline.errors import ConfigError, SourceError
from bronzeline.pipeline.chunks import ensure_plan, is_chunked, plans
from bronzeline.sources.base import Window
from bronzeline.store import batch
from bronzeline.warehouse.control_chunks import ChunkPlan

if TYPE_CHECKING:
    from bronzeline.pipeline.table_run import TableOutcome, TableRun


def run_requested_chunk(run: TableRun, table: TableConfig, chunk: int, outcome: TableOutcome, attempt: int) -> None:
    """Chunk `chunk` of the table's chunked first load, planning it first when it is pending; the
    outcome is `skipped` when there is nothing to do."""
    if not is_chunked(table):
        raise ConfigError(f"{table.name}: has no `chunks:` or `chunk_rows:`; run it without --chunk")
    plan = ensure_plan(run.ctx, table, run.on_event)
    skip = None
    if plan is None:
        skip = f"{table.name}: no chunked first load pending"
    elif chunk > plan.count:
        skip = f"{table.name}: no chunk {chunk}: the chunked first load has {plan.count} chunks"
    elif plan.range(chunk).status == "loaded":
        skip = f"{table.name}: chunk {chunk}/{plan.count} is already loaded"
    if skip is not None or plan is None:
        outcome.status, outcome.message = "skipped", skip or ""
        return
    run_chunk(run, table, plan, chunk, outcome, attempt)


def run_pending_chunks(run: TableRun, table: TableConfig, outcome: TableOutcome, attempt: int) -> bool:
    """In a plain run (the table's lock held exclusive): plan the chunked first load if it is pending
    and run every chunk not yet loaded. False when there is none to do (an ordinary window follows)."""
    plan = ensure_plan(run.ctx, table, run.on_event)
    if plan is None:
        return False
    for chunk in plan.pending:
        run_chunk(run, table, plan, chunk, outcome, attempt)
    return True


def run_chunk(run: TableRun, table: TableConfig, plan: ChunkPlan, chunk: int, outcome: TableOutcome,
              attempt: int) -> None:
    ctx = run.ctx
    area = Area(ctx.store, table.name)
    mine = set(plan.range(chunk).run_ids)
    run._clean_leftovers(table, area, only=mine)
    run._load_pending(table, area, outcome, only=mine)
    _tidy_loaded_chunks(run, table, plan, chunk, area, outcome)
    current = plans(ctx).open_plan(table.name)
    if current is None or current.plan_id != plan.plan_id or current.range(chunk).status == "loaded":
        return  # a batch left by an earlier run of this chunk loaded it just now
    source = ctx.source(table.source)
    columns = source.describe(table)
    run._check_bronze(table, columns)
    problems = source.check(table, columns)
    if problems:
        raise SourceError("; ".join(problems))
    window = Window(None, plan.upper, keys=plan.key_range(chunk))
    bound = plan.bound()
    with ctx.warehouse.transaction():  # the run row and the chunk's list of runs, together
        run_id = ctx.control.start_run(table.name, table.mode, None, plan.upper, bound.source_clock,
                                       bound.oldest_xact_start, plan.holdback_seconds, attempts=attempt)
        plans(ctx).add_run(plan.plan_id, chunk, run_id)
    outcome.window = Window(None, plan.upper)
    outcome.current_run = run_id  # from here on, a failure marks this run failed
    run._extract_and_load_batch(table, area, columns, window, bound, run_id, False, outcome, chunk=plan.ref(chunk))
    outcome.current_run = None


def _tidy_loaded_chunks(run: TableRun, table: TableConfig, plan: ChunkPlan, chunk: int, area: Area,
                        outcome: TableOutcome) -> None:
    """Finish the moves of other chunks' loaded batches that a killed run left in exports/ (no later
    run of those chunks comes to do it), each under that chunk's lock so that a run still moving its
    own batch is never raced."""
    left = {batch.run_id_of_key(name) for name in area.scan("exports").names}
    control = run.ctx.control
    for r in plan.ranges:
        if r.chunk == chunk or r.status != "loaded" or not left & set(r.run_ids):
            continue
        name = control.chunk_lock_name(table.name, r.chunk)
        if not control.try_lock(name):
            continue
        try:
            run._clean_leftovers(table, area, only=set(r.run_ids))
            run._load_pending(table, area, outcome, only=set(r.run_ids))
        finally:
            control.unlock(name)
