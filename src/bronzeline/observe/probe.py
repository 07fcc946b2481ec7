"""One table's source and bronze side by side, for the counting gates of `verify`. Reads only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.sources.base import Column, Source
from bronzeline.sources.postgres import geometry_select
from bronzeline.warehouse.control import RunRecord

Conn = psycopg.Connection[Any]


class TableProbe:
    """Counts at the source (through the Source protocol) and in bronze with the same predicate on the
    watermark column.

    Bounds for bronze are converted at the source to the watermark column's own type, so a `timestamp
    without time zone` watermark is compared in the source's time zone on both sides, as the extract does."""

    def __init__(self, ctx: Context, table: TableConfig) -> None:
        self.ctx = ctx
        self.table = table
        self.source: Source = ctx.source(table.source)
        self.columns: list[Column] = self.source.describe(table)
        self.wh: Conn = ctx.warehouse
        self.bronze = sql.Identifier(ctx.config.warehouse.bronze_schema, table.name)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def wm(self) -> sql.Identifier:
        return sql.Identifier(self.table.watermark or "")

    @property
    def wm_type(self) -> str:
        col = self.column(self.table.watermark or "")
        return col.type if col else "timestamp with time zone"

    def _one(self, query: sql.SQL | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
        row = self.wh.execute(query, params).fetchone()
        return None if row is None else row[0]

    def as_watermark(self, value: datetime) -> datetime:
        """`value` as the watermark column's type, in the source's time zone."""
        if self.wm_type == "timestamp without time zone":
            return self.source.local_timestamp(value)
        return value

    def source_clock(self, ago: timedelta = timedelta(0)) -> datetime:
        return self.source.clock() - ago

    # -- counts
    def source_rows(self, low: datetime | None = None, high: datetime | None = None) -> int:
        """Rows at the source, optionally with low < watermark <= high (NULL watermarks never count)."""
        return self.source.count_rows(self.table, low, high)

    def bronze_rows(self, low: datetime | None = None, high: datetime | None = None) -> int:
        where, params = self._range(self.wm, low, high)
        return int(self._one(sql.SQL("SELECT count(*) FROM {}").format(self.bronze) + where, params))

    def _range(self, col: sql.Identifier, low: datetime | None, high: datetime | None,
               ) -> tuple[sql.Composed, tuple[Any, ...]]:
        if low is None and high is None:
            return sql.Composed([]), ()
        parts: list[sql.Composable] = [sql.SQL("{} IS NOT NULL").format(col)]
        params: list[Any] = []
        if low is not None:
            parts.append(sql.SQL("{} > %s").format(col))
            params.append(self.as_watermark(low))
        if high is not None:
            parts.append(sql.SQL("{} <= %s").format(col))
            params.append(self.as_watermark(high))
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), tuple(params)

    def null_watermarks(self) -> int:
        return self.source.null_watermark_count(self.table)

    def watermark(self) -> datetime | None:
        return self.ctx.control.watermark(self.table.name).last_extracted_at

    def last_loaded_run(self) -> RunRecord | None:
        return self.ctx.control.last_loaded_run(self.table.name)

    # -- geometry
    def geometry_sample(self, limit: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(bronze rows, source rows) for up to `limit` bronze rows picked at random: the key as text,
        then per geometry column its exact text (hex EWKB, or EWKT at 15 decimals), SRID and validity."""
        estimate = self._one(sql.SQL("SELECT reltuples FROM pg_class WHERE oid = %s::regclass"),
                             (self.bronze.as_string(self.wh),)) or 0
        sample: sql.Composable = sql.SQL("")
        if estimate > 50 * limit:  # big table: read a few pages, not all of it
            sample = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(min(100.0, 500.0 * limit / estimate)))
        brz = self.wh.execute(sql.SQL("SELECT {} FROM {} AS t{} ORDER BY random() LIMIT {}").format(
            geometry_select(self.table), self.bronze, sample, sql.Literal(limit))).fetchall()
        if not self.table.key or not brz:
            return brz, []
        keys = [tuple(row[:len(self.table.key)]) for row in brz]
        return brz, self.source.geometry_rows(self.table, keys)
