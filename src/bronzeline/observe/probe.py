"""One table's source and bronze side by side, for the counting gates of `verify`. Reads only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import SourceError
from bronzeline.sources.base import Column
from bronzeline.sources.postgres import PostgresSource

Conn = psycopg.Connection[Any]


class TableProbe:
    """Counts at the source and in bronze with the same predicate on the watermark column.

    Bounds are converted at the source to the watermark column's own type, so a `timestamp without
    time zone` watermark is compared in the source's time zone on both sides, as the extract does."""

    def __init__(self, ctx: Context, table: TableConfig) -> None:
        self.ctx = ctx
        self.table = table
        source = ctx.source(table.source)
        if not isinstance(source, PostgresSource):
            raise SourceError(f"{table.name}: verify reads PostgreSQL sources only")
        self.src: Conn = source.conn
        self.columns: list[Column] = source.describe(table)
        self.relation = PostgresSource.relation(table)
        self.wh: Conn = ctx.warehouse
        self.bronze = sql.Identifier(ctx.config.warehouse.bronze_schema, table.name)
        self.control = ctx.config.warehouse.control_schema

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def wm(self) -> sql.Identifier:
        return sql.Identifier(self.table.watermark or "")

    @property
    def wm_type(self) -> str:
        col = self.column(self.table.watermark or "")
        return col.type if col else "timestamp with time zone"

    def ctl(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.control), sql.Identifier(name))

    def _one(self, conn: Conn, query: sql.SQL | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def as_watermark(self, value: datetime) -> datetime:
        """`value` as the watermark column's type, in the source's time zone."""
        if self.wm_type == "timestamp without time zone":
            return self._one(self.src, sql.SQL("SELECT %s::timestamptz::timestamp"), (value,))  # type: ignore[no-any-return]
        return value

    def source_clock(self, ago: timedelta = timedelta(0)) -> datetime:
        return self._one(self.src, sql.SQL("SELECT now() - %s::interval"), (ago,))  # type: ignore[no-any-return]

    # -- counts
    def source_rows(self, low: datetime | None = None, high: datetime | None = None) -> int:
        """Rows at the source, optionally with low < watermark <= high (NULL watermarks never count)."""
        where, params = self._range(sql.Identifier("q", self.table.watermark or ""), low, high)
        query = sql.SQL("SELECT count(*) FROM {} AS q").format(self.relation) + where
        return int(self._one(self.src, query, params))

    def bronze_rows(self, low: datetime | None = None, high: datetime | None = None) -> int:
        where, params = self._range(self.wm, low, high)
        return int(self._one(self.wh, sql.SQL("SELECT count(*) FROM {}").format(self.bronze) + where, params))

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
        query = sql.SQL("SELECT count(*) FROM {} AS q WHERE {} IS NULL").format(
            self.relation, sql.Identifier("q", self.table.watermark or ""))
        return int(self._one(self.src, query))

    def watermark(self) -> datetime | None:
        return self._one(self.wh, sql.SQL("SELECT last_extracted_at FROM {} WHERE table_name = %s").format(  # type: ignore[no-any-return]
            self.ctl("extract_watermarks")), (self.table.name,))

    def last_loaded_run(self) -> dict[str, Any] | None:
        row = self.wh.execute(sql.SQL(
            "SELECT run_id, rows_extracted, run_started_at, run_finished_at FROM {} "
            "WHERE table_name = %s AND status = 'loaded' ORDER BY run_id DESC LIMIT 1").format(
            self.ctl("extract_runs")), (self.table.name,)).fetchone()
        if row is None:
            return None
        return {"run_id": row[0], "rows_extracted": row[1], "started": row[2], "finished": row[3]}

    # -- geometry
    def geometry_sample(self, limit: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(bronze rows, source rows) for up to `limit` bronze rows picked at random: the key as text,
        then per geometry column its exact text (hex EWKB, or EWKT at 15 decimals), SRID and validity."""
        key = self.table.key
        geo = self.table.geometry
        exact = "ewkt" if self.table.geometry_format == "ewkt" else "ewkb"
        shown: list[sql.Composable] = [sql.SQL("{}::text").format(sql.Identifier("t", k)) for k in key]
        for g in geo:
            ident = sql.Identifier("t", g)
            text = (sql.SQL("ST_AsEWKT({}, 15)") if exact == "ewkt" else sql.SQL("encode(ST_AsEWKB({}), 'hex')"))
            shown += [text.format(ident), sql.SQL("ST_SRID({})").format(ident), sql.SQL("ST_IsValid({})").format(ident)]
        cols = sql.SQL(", ").join(shown)
        estimate = self._one(self.wh, sql.SQL("SELECT reltuples FROM pg_class WHERE oid = %s::regclass"),
                             (self.bronze.as_string(self.wh),)) or 0
        sample: sql.Composable = sql.SQL("")
        if estimate > 50 * limit:  # big table: read a few pages, not all of it
            sample = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(min(100.0, 500.0 * limit / estimate)))
        brz = self.wh.execute(sql.SQL("SELECT {} FROM {} AS t{} ORDER BY random() LIMIT {}").format(
            cols, self.bronze, sample, sql.Literal(limit))).fetchall()
        if not key or not brz:
            return brz, []
        keys = [[row[i] for row in brz] for i in range(len(key))]
        cast = [self.column(k).source_type if self.column(k) else "text" for k in key]  # type: ignore[union-attr]
        aliases = [f"k{i}" for i in range(len(key))]
        join = sql.SQL(" AND ").join(
            sql.SQL("{} = {}::{}").format(sql.Identifier("t", k), sql.Identifier("u", a), sql.SQL(c))
            for k, a, c in zip(key, aliases, cast, strict=True))
        unnest = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in key)
        query = sql.SQL("SELECT {} FROM {} AS t JOIN unnest({}) AS u({}) ON {}").format(
            cols, self.relation, unnest, sql.SQL(", ").join(map(sql.Identifier, aliases)), join)
        src = self.src.execute(query, tuple(keys)).fetchall()
        return brz, src
