"""`bronzeline reconcile`: compare a table's source and bronze by key ranges (up to the watermark for
incremental tables), report the keys missing from bronze, extra in it (gone from the source) and
changed; with `repair`, load the missing and changed rows and delete the extra ones through one
ordinary, ledgered batch. How incremental tables learn about deletes without change data capture.

The source is read only through the Source protocol (`key_ranges`); bronze through the same SQL on the
warehouse connection. `repair` holds the table's lock (a concurrent `run` of the table skips it);
a plain comparison takes no lock.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.batches.area import Area
from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, LockBusy, Terminal, WarehouseError
from bronzeline.reconcile.compare import Options, Progress, TooManyDifferences, compare
from bronzeline.reconcile.repair import repair as write_and_load
from bronzeline.reconcile.report import KeyList, RepairResult, TableReport, key_order
from bronzeline.sources.base import Column, Key, Window
from bronzeline.sources.keyranges import RangeReader
from bronzeline.text import first_line
from bronzeline.warehouse import ddl


class NotComparable(Terminal):
    """The table cannot be reconciled as it stands (no key, nothing loaded, bronze differs in shape)."""


def reconcile_table(ctx: Context, name: str, *, repair: bool = False, options: Options | None = None,
                    on_progress: Progress | None = None) -> TableReport:
    table = ctx.config.table(name)
    if not table.key:
        raise NotComparable(f"{table.name}: reconcile compares rows by key; set `key:` on the table (its unique "
                            "key at the source) and run `bronzeline migrate`")
    ctx.require_migrated()
    control = ctx.control
    if repair and not control.try_lock(table.name):
        raise LockBusy(f"{table.name}: another run holds this table's lock; try the repair again when it has "
                       "finished")
    try:
        return _reconcile(ctx, table, repair, options or Options(), on_progress)
    finally:
        if repair:
            with contextlib.suppress(psycopg.Error, BronzelineError):
                control.unlock(table.name)


def _reconcile(ctx: Context, table: TableConfig, repair: bool, options: Options,
               on_progress: Progress | None) -> TableReport:
    started = time.monotonic()
    if table.is_api:
        raise NotComparable(f"{table.name}: an API or push table has no source table to compare with; its "
                            "records are in bronze and in its _raw table, its calls in `status`")
    if repair:
        waiting = Area(ctx.store, table.name).pending()
        if waiting:
            raise NotComparable(f"{table.name}: {len(waiting)} batch(es) wait in exports/ to be loaded; run "
                                f"`bronzeline run {table.name}` first, then repair")
    source = ctx.source(table.source)
    columns = source.describe(table)
    _check_bronze(ctx, table, columns)
    watermark: datetime | None = None
    if table.mode == "incremental":
        watermark = ctx.control.watermark(table.name).last_extracted_at
        if watermark is None:
            raise NotComparable(f"{table.name}: nothing was loaded yet, so there is no watermark to compare up to; "
                                f"run `bronzeline run {table.name}` first")
    at_source = source.key_ranges(table, columns, Window(None, watermark))
    in_bronze = _bronze_side(ctx, table, columns, watermark)
    if at_source.collations() != in_bronze.collations():
        # Ranges must hold the same keys on both sides: text keys then compare byte by byte (the key's
        # index no longer serves the ranges; slower, but never wrong).
        at_source.use_binary_order()
        in_bronze.use_binary_order()
    found = compare(table.name, at_source, in_bronze, options, on_progress,
                    _first_bounds(ctx, table, in_bronze, options))
    diff = found.differences
    beyond = 0
    if table.mode == "incremental" and diff.extra:
        # Bronze rows whose source row was touched past the watermark: the next run's, not deleted.
        ahead = at_source.present(sorted(diff.extra, key=key_order))
        for key in ahead:
            diff.extra.pop(key, None)
        beyond = len(ahead)
    report = TableReport(
        table.name, table.mode, list(table.key), watermark, found.ranges, found.source_rows, found.bronze_rows,
        KeyList.of(diff.missing, options.list_cap), KeyList.of(diff.extra, options.list_cap),
        KeyList.of(diff.changed, options.list_cap), beyond)
    if repair and report.differences:
        upserts = sorted([*diff.missing, *diff.changed], key=key_order)
        report.repair = write_and_load(ctx, table, columns, at_source, upserts, sorted(diff.extra, key=key_order),
                                       watermark)
    report.seconds = time.monotonic() - started
    return report


def _check_bronze(ctx: Context, table: TableConfig, columns: list[Column]) -> None:
    schema = ctx.config.warehouse.bronze_schema
    bronze = ddl.bronze_columns(ctx.warehouse, schema, table.name)
    if bronze is None:
        raise NotComparable(f"{table.name}: {schema}.{table.name} does not exist; run `bronzeline migrate`")
    diffs = ddl.column_differences(columns, bronze)
    if diffs:
        raise NotComparable(f"{table.name}: the source and bronze differ in their columns ({'; '.join(diffs)}); "
                            "run `bronzeline drift` and bring bronze in line before reconciling rows")


def _first_bounds(ctx: Context, table: TableConfig, bronze: RangeReader, options: Options) -> list[Key] | None:
    """On a large bronze table, the first ranges' boundaries from a block sample (numbering every row
    costs about as much as hashing them); None: exact quantiles."""
    row = ctx.warehouse.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                                (sql.Identifier(ctx.config.warehouse.bronze_schema, table.name).as_string(
                                    ctx.warehouse),)).fetchone()
    estimate = float(row[0]) if row and row[0] is not None else -1.0
    if estimate < 20 * options.range_rows:  # small, or never analyzed
        return None
    return bronze.sampled_quantiles(options.range_rows, estimate)


def _bronze_side(ctx: Context, table: TableConfig, columns: list[Column], watermark: datetime | None) -> RangeReader:
    high: Any = watermark
    wm = next((c for c in columns if c.name == table.watermark), None)
    if watermark is not None and wm is not None and wm.type == "timestamp without time zone":
        high = ctx.source(table.source).local_timestamp(watermark)  # the naive value the extract compared
    schema = ctx.config.warehouse.bronze_schema

    def fail(exc: psycopg.Error, what: str) -> WarehouseError:
        return WarehouseError(f"{table.name}: {what} in {schema}.{table.name} failed: {first_line(exc)}")

    relation = sql.Identifier(schema, table.name)  # a table, not a subquery: it can be sampled
    return RangeReader(ctx.warehouse, relation, table, columns, watermark_high=high, select_list=sql.SQL("*"),
                       fail=fail)


__all__ = ["NotComparable", "Options", "Progress", "RepairResult", "TableReport", "TooManyDifferences",
           "reconcile_table"]
