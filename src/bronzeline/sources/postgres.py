"""PostgreSQL source: column types, snapshot-safe upper bounds, COPY out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import ConnectionConfig, TableConfig
from bronzeline.connections import connect
from bronzeline.errors import SourceError
from bronzeline.redact import dsn_password, redact
from bronzeline.sources.base import Bound, Column, ServerInfo, Visibility, Window

# A transaction's start is stamped a few instructions before pg_stat_activity shows it; hold the
# bound this far below the source clock so a transaction caught in that gap can never be missed.
CLOCK_MARGIN = timedelta(milliseconds=100)
CHUNK_BYTES = 1 << 20  # batch the per-row COPY messages into chunks before any other work
TIMESTAMP_TYPES = {"timestamp with time zone", "timestamp without time zone"}
SESSION_SETTINGS = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
                    "bytea_output": "hex"}

_TYPES_SQL = """
SELECT u.ord::int,
       CASE WHEN coalesce(b.typtype, t.typtype) = 'e' THEN 'e'
            WHEN el.typtype = 'e' THEN 'enum[]' ELSE coalesce(b.typtype, t.typtype)::text END AS typtype,
       format_type(u.oid, nullif(u.mod, -1)) AS declared,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, nullif(t.typtypmod, -1))
            ELSE format_type(u.oid, nullif(u.mod, -1)) END AS resolved,
       coalesce(b.typname, t.typname) AS base_name
FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS u(oid, mod, ord)
JOIN pg_type t ON t.oid = u.oid
LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
LEFT JOIN pg_type el ON el.oid = coalesce(b.typelem, t.typelem) AND coalesce(b.typcategory, t.typcategory) = 'A'
ORDER BY u.ord
"""

_BOUND_SQL = """
SELECT now() AS clock, a.pid, a.application_name, a.usename, a.xact_start,
       pg_is_in_recovery() AS in_recovery
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT pid, application_name, usename, xact_start
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'
      AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
      AND coalesce(application_name, '') NOT LIKE 'bronzeline%%'
    ORDER BY xact_start LIMIT 1) AS a ON true
"""

_VISIBILITY_SQL = """
SELECT current_user, pg_is_in_recovery(),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
"""


class PostgresSource:
    def __init__(self, name: str, cfg: ConnectionConfig) -> None:
        self.name = name
        self._secret = dsn_password(cfg.dsn)
        self.conn = connect(name, cfg, SourceError, purpose="extract")
        with self.conn.cursor() as cur:
            for key, value in SESSION_SETTINGS.items():
                cur.execute("SELECT set_config(%s, %s, false)", (key, value))
            if cfg.statement_timeout:
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (cfg.statement_timeout,))

    def close(self) -> None:
        self.conn.close()

    def _fail(self, table: TableConfig, exc: psycopg.Error, what: str) -> SourceError:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                        [self._secret])
        hint = ""
        if isinstance(exc, psycopg.errors.UndefinedTable):
            hint = f"; check `from:` of table {table.name} and the source login's search path"
        elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
            hint = "; grant the source login SELECT on it"
        elif isinstance(exc, psycopg.OperationalError):
            hint = "; the source connection was lost, run again when it is back"
        return SourceError(f"{table.name}: {what} failed at source {self.name!r}: {detail}{hint}")

    @staticmethod
    def relation(table: TableConfig) -> sql.Composable:
        rel = table.source_relation
        if rel is not None:
            return sql.SQL("(SELECT * FROM {}.{})").format(sql.Identifier(rel[0]), sql.Identifier(rel[1]))
        return sql.SQL("(") + sql.SQL(table.query or "") + sql.SQL("\n)")

    def describe(self, table: TableConfig) -> list[Column]:
        query = sql.SQL("SELECT * FROM {} AS q LIMIT 0").format(self.relation(table))
        try:
            with self.conn.cursor() as cur:
                cur.execute(query)
                res = cur.pgresult
                assert res is not None
                names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
                oids = [res.ftype(i) for i in range(res.nfields)]
                mods = [res.fmod(i) for i in range(res.nfields)]
                cur.execute(_TYPES_SQL, (oids, mods))
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise self._fail(table, exc, "reading the columns") from None
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise SourceError(f"{table.name}: the source returns duplicate column names {dupes}; alias them")
        columns = []
        for name, (_, typtype, declared, resolved, base_name) in zip(names, rows, strict=True):
            # Enums land as text (arrays of enums as text[]): the warehouse need not know the type.
            cast = {"e": "text", "enum[]": "text[]"}.get(str(typtype))
            columns.append(Column(
                name=name,
                type=cast or str(resolved),
                source_type=str(declared),
                select_cast=cast,
                is_geometry=base_name == "geometry",
            ))
        return columns

    def check(self, table: TableConfig, columns: list[Column]) -> list[str]:
        problems: list[str] = []
        by_name = {c.name: c for c in columns}
        for col in table.key:
            if col not in by_name:
                problems.append(f"{table.name}: key column {col!r} is not in the source's columns")
        for col in table.geometry:
            if col not in by_name:
                problems.append(f"{table.name}: geometry column {col!r} is not in the source's columns")
            elif not by_name[col].is_geometry:
                problems.append(f"{table.name}: column {col!r} listed under geometry is {by_name[col].type}")
        if table.mode != "incremental":
            return problems
        wm = by_name.get(table.watermark or "")
        if wm is None:
            problems.append(f"{table.name}: watermark column {table.watermark!r} is not in the source's columns")
        elif wm.type not in TIMESTAMP_TYPES:
            problems.append(f"{table.name}: watermark column {wm.name!r} is {wm.type}; "
                            "use an insertion-time timestamptz column (e.g. recorded_at DEFAULT now())")
        if table.lookback is None:
            user, in_recovery, sees_all = self._visibility()
            if in_recovery:
                problems.append(f"{table.name}: source {self.name!r} is a replica (in recovery) and cannot see "
                                "the primary's open transactions; point it at the primary or set `lookback:`")
            elif not sees_all:
                problems.append(f"{table.name}: source login {user!r} cannot see other sessions' transactions; "
                                f"a DBA must run GRANT pg_read_all_stats TO {user} (or pg_monitor), "
                                "or set `lookback:` on the table")
        return problems

    def _visibility(self) -> tuple[str, bool, bool]:
        row = self.conn.execute(_VISIBILITY_SQL).fetchone()
        assert row is not None
        return str(row[0]), bool(row[1]), bool(row[2])

    def watermark_nullable(self, table: TableConfig) -> bool | None:
        rel = table.source_relation
        if rel is None or not table.watermark:
            return None
        row = self.conn.execute(
            "SELECT NOT a.attnotnull FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
            "AND a.attname = %s AND NOT a.attisdropped",
            (sql.Identifier(*rel).as_string(self.conn), table.watermark),
        ).fetchone()
        return None if row is None else bool(row[0])

    def upper_bound(self, table: TableConfig) -> Bound:
        try:
            row = self.conn.execute(_BOUND_SQL).fetchone()
        except psycopg.Error as exc:
            raise self._fail(table, exc, "reading the source clock") from None
        assert row is not None
        clock, pid, app, user, xact_start, in_recovery = row
        assert isinstance(clock, datetime) and (xact_start is None or isinstance(xact_start, datetime))
        if in_recovery and table.lookback is None:
            raise SourceError(f"{table.name}: source {self.name!r} is a replica (in recovery); it cannot see the "
                              "primary's open transactions. Point it at the primary or set `lookback:`")
        upper = clock - CLOCK_MARGIN
        holder = None
        if xact_start is not None and xact_start - timedelta(microseconds=1) < upper:
            upper = xact_start - timedelta(microseconds=1)
            holder = f"pid {pid} ({app or 'no application_name'}, user {user}) in a transaction since {xact_start}"
        return Bound(upper=upper, source_clock=clock, oldest_xact_start=xact_start, holder=holder)

    def select_list(self, columns: list[Column], table: TableConfig) -> sql.Composable:
        parts: list[sql.Composable] = []
        for col in columns:
            ident = sql.Identifier("q", col.name)
            if col.is_geometry and table.geometry_format == "ewkt":
                parts.append(sql.SQL("ST_AsEWKT({}, 15) AS {}").format(ident, sql.Identifier(col.name)))
            elif col.select_cast:
                parts.append(sql.SQL("{}::{} AS {}").format(ident, sql.SQL(col.select_cast), sql.Identifier(col.name)))
            else:
                parts.append(ident)
        return sql.SQL(", ").join(parts)

    def extract(self, table: TableConfig, columns: list[Column], window: Window) -> CopyStream:
        where: list[sql.Composable] = []
        params: list[Any] = []
        if table.mode == "incremental":
            wm = sql.Identifier("q", table.watermark or "")
            if window.start is not None:
                where.append(sql.SQL("{} > %s").format(wm))
                params.append(window.start)
            if window.end is not None:
                where.append(sql.SQL("{} <= %s").format(wm))
                params.append(window.end)
            where.append(sql.SQL("{} IS NOT NULL").format(wm))
        cond = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        query = sql.SQL("COPY (SELECT {} FROM {} AS q{}) TO STDOUT WITH (FORMAT csv)").format(
            self.select_list(columns, table), self.relation(table), cond
        )
        return CopyStream(self, table, query, params)

    # -- for verify (reads only): counts with the extract's own predicate, samples, who the login is
    def server_info(self) -> ServerInfo:
        row = self.conn.execute("SELECT current_user, current_setting('server_version'), pg_is_in_recovery()"
                                ).fetchone()
        assert row is not None
        return ServerInfo(str(row[0]), str(row[1]), bool(row[2]))

    def visibility(self) -> Visibility:
        row = self.conn.execute(
            "SELECT current_user, pg_is_in_recovery(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), "
            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid())").fetchone()
        assert row is not None
        return Visibility(str(row[0]), bool(row[1]), bool(row[2]), bool(row[3]), int(row[4]))

    def watermark_indexes(self, table: TableConfig) -> int | None:
        rel = table.source_relation
        if rel is None or not table.watermark:
            return None
        row = self.conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = to_regclass(%s) AND a.attname = %s AND i.indpred IS NULL",
            (sql.Identifier(*rel).as_string(self.conn), table.watermark)).fetchone()
        return int(row[0]) if row else 0

    def clock(self) -> datetime:
        row = self.conn.execute("SELECT now()").fetchone()
        assert row is not None and isinstance(row[0], datetime)
        return row[0]

    def local_timestamp(self, value: datetime) -> datetime:
        row = self.conn.execute("SELECT %s::timestamptz::timestamp", (value,)).fetchone()
        assert row is not None and isinstance(row[0], datetime)
        return row[0]

    def count_rows(self, table: TableConfig, low: datetime | None = None, high: datetime | None = None) -> int:
        # A `timestamp` watermark compared with a timestamptz bound is read in the session's time zone,
        # as the extract reads it.
        wm = sql.Identifier("q", table.watermark or "")
        where: list[sql.Composable] = []
        params: list[Any] = []
        if low is not None or high is not None:
            where.append(sql.SQL("{} IS NOT NULL").format(wm))
        if low is not None:
            where.append(sql.SQL("{} > %s").format(wm))
            params.append(low)
        if high is not None:
            where.append(sql.SQL("{} <= %s").format(wm))
            params.append(high)
        cond = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {} AS q").format(self.relation(table)) + cond,
                                params).fetchone()
        return int(row[0]) if row else 0

    def null_watermark_count(self, table: TableConfig) -> int:
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {} AS q WHERE {} IS NULL").format(
            self.relation(table), sql.Identifier("q", table.watermark or ""))).fetchone()
        return int(row[0]) if row else 0

    def geometry_rows(self, table: TableConfig, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if not table.key or not keys:
            return []
        types = {c.name: c.source_type for c in self.describe(table)}
        aliases = [f"k{i}" for i in range(len(table.key))]
        join = sql.SQL(" AND ").join(
            sql.SQL("{} = {}::{}").format(sql.Identifier("t", k), sql.Identifier("u", a), sql.SQL(types.get(k, "text")))
            for k, a in zip(table.key, aliases, strict=True))
        unnest = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in table.key)
        query = sql.SQL("SELECT {} FROM {} AS t JOIN unnest({}) AS u({}) ON {}").format(
            geometry_select(table), self.relation(table), unnest, sql.SQL(", ").join(map(sql.Identifier, aliases)),
            join)
        columns = [[row[i] for row in keys] for i in range(len(table.key))]
        return self.conn.execute(query, columns).fetchall()

    def cancel(self) -> None:
        """Cancel the query in flight (from any thread); a connection that is gone has nothing to cancel."""
        if not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                self.conn.cancel_safe(timeout=2.0)


def geometry_select(table: TableConfig) -> sql.Composed:
    """The select list verify compares on both sides (relation alias `t`): the key as text, then per
    geometry column its exact text (hex EWKB, or EWKT at 15 decimals), SRID and validity."""
    shown: list[sql.Composable] = [sql.SQL("{}::text").format(sql.Identifier("t", k)) for k in table.key]
    text = sql.SQL("ST_AsEWKT({}, 15)") if table.geometry_format == "ewkt" else sql.SQL("encode(ST_AsEWKB({}), 'hex')")
    for g in table.geometry:
        ident = sql.Identifier("t", g)
        shown += [text.format(ident), sql.SQL("ST_SRID({})").format(ident), sql.SQL("ST_IsValid({})").format(ident)]
    return sql.SQL(", ").join(shown)


class CopyStream:
    """COPY … TO STDOUT as an iterator of ~1 MB chunks; `rows` is set once it is exhausted."""

    def __init__(self, source: PostgresSource, table: TableConfig, query: sql.Composed, params: list[Any]) -> None:
        self.source = source
        self.table = table
        self.query = query
        self.params = params
        self.rows: int | None = None

    def __iter__(self) -> Iterator[bytes]:
        buf = bytearray()
        try:
            with self.source.conn.cursor() as cur:
                with cur.copy(self.query, self.params or None) as copy:
                    for chunk in copy:
                        buf += chunk
                        if len(buf) >= CHUNK_BYTES:
                            yield bytes(buf)
                            buf.clear()
                if buf:
                    yield bytes(buf)
                self.rows = int(cur.rowcount)
        except psycopg.Error as exc:
            raise self.source._fail(self.table, exc, "extracting") from None
