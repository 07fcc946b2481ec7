"""PostgreSQL source: column types, snapshot-safe upper bounds, COPY out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq, sql

from bronzeline.config.models import ConnectionConfig, TableConfig
from bronzeline.connections import connect
from bronzeline.errors import SourceError
from bronzeline.redact import dsn_password, redact
from bronzeline.sources import postgres_chunks
from bronzeline.sources.base import Bound, CdcFindings, Column, Findings, ServerInfo, Visibility, Window, key_text
from bronzeline.sources.cdc.changes import SlotHealth
from bronzeline.sources.cdc.health import read_slot_health
from bronzeline.sources.cdc.readiness import cdc_readiness
from bronzeline.sources.keyranges import RangeReader
from bronzeline.text import first_line

# A transaction's start is stamped a few instructions before pg_stat_activity shows it; hold the
# bound this far below the source clock so a transaction caught in that gap can never be missed.
CLOCK_MARGIN = timedelta(milliseconds=100)
CHUNK_BYTES = 1 << 20  # batch the per-row COPY messages into chunks before any other work
TIMESTAMP_TYPES = {"timestamp with time zone", "timestamp without time zone"}
SMALL_TABLE_ROWS = 1_000_000  # below this, a duplicate-key probe without an index is cheap enough
SMALL_TABLE_BYTES = 64 << 20  # the same for a table never analyzed (no row estimate yet)
KEY_PROBE_TIMEOUT = "30s"

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

# For `key:` of a `from:` table: a unique index whose key columns all belong to `key:` proves the key
# unique; a btree index led by the key's columns makes a duplicate probe cheap; otherwise the size says.
_KEY_CATALOG_SQL = """
SELECT c.relkind::text, c.reltuples::float8, pg_relation_size(c.oid)::bigint,
  EXISTS (SELECT 1 FROM pg_index i
          WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
            AND (SELECT array_agg(a.attname::text) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE k.ord <= i.indnkeyatts) <@ %(key)s::text[]),
  EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
          WHERE i.indrelid = c.oid AND i.indisvalid AND i.indnkeyatts >= cardinality(%(key)s::text[])
            AND (SELECT array_agg(a.attname::text) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE k.ord <= cardinality(%(key)s::text[])) @> %(key)s::text[])
FROM pg_class c WHERE c.oid = to_regclass(%(rel)s)
"""


class PostgresSource:
    def __init__(self, name: str, cfg: ConnectionConfig) -> None:
        self.name = name
        self._secret = dsn_password(cfg.dsn)
        extra = {"statement_timeout": cfg.statement_timeout} if cfg.statement_timeout else None
        self.conn = connect(name, cfg, SourceError, purpose="extract", settings=extra)

    def close(self) -> None:
        self.conn.close()

    def _fail(self, table: TableConfig, exc: psycopg.Error, what: str) -> SourceError:
        detail = redact(first_line(exc), [self._secret])
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
            if table.query is not None and not isinstance(exc, psycopg.OperationalError):
                self._check_query_text(table)
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

    def _check_query_text(self, table: TableConfig) -> None:
        """Ask the server to parse the user's `query:` alone, so that an error and its position refer to
        the user's text rather than to bronzeline's wrapper around it. Returns when the text alone is fine."""
        text = table.query or ""
        try:
            with self.conn.lock:  # the statement goes through libpq directly, past psycopg's own methods
                res = self.conn.pgconn.prepare(b"", text.encode(self.conn.info.encoding))
        except psycopg.Error:
            return  # the connection is gone: the wrapped error says what happened
        if res.status != pq.ExecStatus.FATAL_ERROR:
            return
        exc = psycopg.errors.error_from_result(res, encoding=self.conn.info.encoding)
        if exc.sqlstate is None:
            return  # not the query's fault (a lost connection): the wrapped error says what happened
        primary = exc.diag.message_primary or type(exc).__name__
        where = ""
        position = exc.diag.statement_position
        if position and position.isdigit() and 0 < int(position) <= len(text) + 1:
            before = text[: int(position) - 1]
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            source_line = text.splitlines()[line - 1].strip() if text.splitlines() else ""
            where = f" at line {line}, column {column} of query ({source_line[:80]!r})"
        raise SourceError(f"{table.name}: the `query:` is not valid at source {self.name!r}{where}: {primary}; "
                          "fix the query (check it alone in psql)")

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
            seen = self.visibility()
            user, in_recovery, sees_all = seen.user, seen.in_recovery, seen.superuser or seen.read_all_stats
            if in_recovery:
                problems.append(f"{table.name}: source {self.name!r} is a replica (in recovery) and cannot see "
                                "the primary's open transactions; point it at the primary or set `lookback:`")
            elif not sees_all:
                problems.append(f"{table.name}: source login {user!r} cannot see other sessions' transactions; "
                                f"a DBA must run GRANT pg_read_all_stats TO {user} (or pg_monitor), "
                                "or set `lookback:` on the table")
        return problems

    def key_problems(self, table: TableConfig) -> Findings:
        found = Findings()
        key = table.key
        if not key:
            return found
        keys = ", ".join(key)
        rel = table.source_relation
        if rel is None:
            found.warnings.append(f"{table.name}: key ({keys}) of a `query:` table cannot be checked by migrate; "
                                  "a run checks it at load and fails if two rows share a key")
            return found
        name = f"{rel[0]}.{rel[1]}"
        try:
            row = self.conn.execute(_KEY_CATALOG_SQL, {"key": key, "rel": sql.Identifier(*rel).as_string(self.conn)}
                                    ).fetchone()
            if row is None or row[0] is None:
                return found  # no such relation: describe() has said so already
            relkind, reltuples, size, unique, indexed = row
            if unique:
                return found
            small = relkind in ("r", "m") and (0 <= reltuples < SMALL_TABLE_ROWS
                                               or (reltuples < 0 and size < SMALL_TABLE_BYTES))
            if not (indexed or small):
                found.warnings.append(
                    f"{table.name}: no unique index on key ({keys}) at {name} and the table is too large to look "
                    "for duplicates cheaply; a run fails if two rows share a key")
                return found
            duplicate = self._duplicate_key(rel, key)
        except psycopg.errors.QueryCanceled:
            found.warnings.append(f"{table.name}: looking for duplicate keys ({keys}) at {name} took longer than "
                                  f"{KEY_PROBE_TIMEOUT}; uniqueness not checked, a run fails if two rows share a key")
            return found
        except psycopg.Error as exc:
            raise self._fail(table, exc, "checking the key") from None
        if duplicate is not None:
            values, count = duplicate
            found.problems.append(
                f"{table.name}: key ({keys}) is not unique at the source: {key_text(key, values)} appears {count} "
                f"times in {name}; set `key:` to the source's unique key (see its primary key or unique indexes)")
        return found

    def _duplicate_key(self, rel: tuple[str, str], key: list[str]) -> tuple[tuple[object, ...], int] | None:
        """One key value that appears more than once, and how often; bounded by KEY_PROBE_TIMEOUT."""
        cols = sql.SQL(", ").join(sql.Identifier(k) for k in key)
        as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
        probe = sql.SQL("SELECT {}, count(*) FROM {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
            as_text, sql.Identifier(*rel), cols)
        with self.conn.transaction():
            # bound the probe, unless the connection's own statement_timeout is already shorter
            self.conn.execute("SELECT set_config('statement_timeout', %(t)s, true) WHERE current_setting("
                              "'statement_timeout')::interval = '0' OR current_setting("
                              "'statement_timeout')::interval > %(t)s::interval", {"t": KEY_PROBE_TIMEOUT})
            row = self.conn.execute(probe).fetchone()
        if row is None:
            return None
        return tuple(row[:-1]), int(row[-1])

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

    def extract(self, table: TableConfig, columns: list[Column], window: Window, *,
                snapshot: str | None = None) -> CopyStream:
        """COPY out the table's rows in `window`; with `snapshot` (a name exported by a replication slot's
        creation), inside a transaction that sees exactly that snapshot."""
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
            if window.keys is not None:
                keys, key_params = postgres_chunks.key_predicate(window.keys, columns)
                where.append(keys)
                params += key_params
        cond = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
        query = sql.SQL("COPY (SELECT {} FROM {} AS q{}) TO STDOUT WITH (FORMAT csv)").format(
            self.select_list(columns, table), self.relation(table), cond
        )
        return CopyStream(self, table, query, params, snapshot)

    @contextlib.contextmanager
    def in_snapshot(self, snapshot: str) -> Iterator[psycopg.Connection[Any]]:
        """A read-only REPEATABLE READ transaction on this source's connection that sees exactly the exported
        snapshot `snapshot` (valid while the session that exported it stays open and idle). Committed on a
        clean exit, rolled back otherwise."""
        conn = self.conn
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            # a utility statement takes no parameters; the snapshot name is quoted as a literal
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            yield conn
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def key_ranges(self, table: TableConfig, columns: list[Column], window: Window) -> RangeReader:
        high: Any = window.end if table.mode == "incremental" else None
        wm = next((c for c in columns if c.name == table.watermark), None)
        if high is not None and wm is not None and wm.type == "timestamp without time zone":
            high = self.local_timestamp(high)  # compared in the source's time zone, as the extract does

        def fail(exc: psycopg.Error, what: str) -> SourceError:
            return self._fail(table, exc, what)

        return RangeReader(self.conn, self.relation(table), table, columns, watermark_high=high,
                           select_list=self.select_list(columns, table), fail=fail)

    # -- chunked first loads
    def row_estimate(self, table: TableConfig) -> int:
        try:
            return postgres_chunks.row_estimate(self.conn, table, self.relation(table))
        except psycopg.Error as exc:
            raise self._fail(table, exc, "estimating the rows") from None

    def key_boundaries(self, table: TableConfig, count: int) -> list[tuple[str, ...]]:
        try:
            return postgres_chunks.key_boundaries(self.conn, table, self.relation(table), count)
        except psycopg.Error as exc:
            raise self._fail(table, exc, "cutting the key into chunks") from None

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

    # -- change data capture: the checks and the health read live in sources/cdc/
    def cdc_readiness(self, tables: list[TableConfig], publication: str, slot: str) -> CdcFindings:
        try:
            return cdc_readiness(self.conn, self.name, tables, publication, slot)
        except psycopg.Error as exc:
            detail = redact(first_line(exc), [self._secret])
            raise SourceError(f"checking change data capture at source {self.name!r} failed: {detail}") from None

    def slot_health(self, slot: str) -> SlotHealth:
        try:
            return read_slot_health(self.conn, slot)
        except psycopg.Error as exc:
            detail = redact(first_line(exc), [self._secret])
            raise SourceError(f"reading the slot {slot} at source {self.name!r} failed: {detail}") from None

    def batch_loaded(self, table: TableConfig, run_id: int) -> None:
        return None  # a database keeps nothing for a batch

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

    def __init__(self, source: PostgresSource, table: TableConfig, query: sql.Composed, params: list[Any],
                 snapshot: str | None = None) -> None:
        self.source = source
        self.table = table
        self.query = query
        self.params = params
        self.snapshot = snapshot  # read inside this exported snapshot (a CDC slot's first load)
        self.rows: int | None = None

    def __iter__(self) -> Iterator[bytes]:
        buf = bytearray()
        try:
            with contextlib.ExitStack() as stack:
                if self.snapshot is not None:
                    stack.enter_context(self.source.in_snapshot(self.snapshot))
                cur = stack.enter_context(self.source.conn.cursor())
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
