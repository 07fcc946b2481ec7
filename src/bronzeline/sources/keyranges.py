"""KeyRanges over one PostgreSQL relation: a source's table (or query), or its bronze copy. `reconcile`
runs the very same SQL on both sides, so equal rows give equal text and equal hashes:

- a row's canonical text is `ROW(col, …)::text`: record output writes each field with its type's own
  output function, quoted and escaped, NULL as nothing and '' as "", so NULL and empty text differ. An
  enum's output is its label, which is what bronze's text column holds; geometry's is hex EWKB on both
  sides, except for `geometry_format: ewkt` tables, whose bronze was loaded from EWKT at 15 decimals:
  both sides then compare ST_AsEWKT(geom, 15);
- each query runs in its own transaction with TimeZone UTC, DateStyle ISO, IntervalStyle postgres and
  extra_float_digits 3 (shortest exact floats on PostgreSQL 12 and later), set for that transaction only;
- a range's digest is its row count and the sum (into numeric: exact, no overflow) of each row's 64-bit
  `hashtextextended` of that text. A sum does not depend on the order rows are read in, so the sides
  need not sort alike, and a missing, extra or changed row changes it except with a chance of 2^-64. It
  is twice as fast as md5; should two servers ever hash differently (PostgreSQL documents no promise
  across platforms), every range would merely be split down to keys, where rows are compared by md5 —
  slower, never wrong.

Keys travel as text (each key column's `::text`) and are cast back to the column's type in predicates,
so a range predicate is a plain (row) comparison on the key columns that their index serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import BronzelineError
from bronzeline.sources.base import Column, Key, KeySpan, RangeDigest

# The settings every reconcile query runs under, on both sides (see the module's docstring).
DIGEST_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
                   "extra_float_digits": "3", "bytea_output": "hex"}
KEYS_PER_QUERY = 1000
COLLATABLE_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
T = TypeVar("T")
Fail = Callable[[psycopg.Error, str], BronzelineError]


def column_text(col: Column, table: TableConfig) -> sql.Composable:
    """One column as the row text holds it (relation alias `q`)."""
    ident = sql.Identifier("q", col.name)
    if col.is_geometry and table.geometry_format == "ewkt":
        return sql.SQL("ST_AsEWKT({}, 15)").format(ident)
    return ident


def row_text(columns: list[Column], table: TableConfig) -> sql.Composable:
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(column_text(c, table) for c in columns))


class RangeReader:
    """KeyRanges on one connection. `relation` is what FROM reads (aliased `q`); `watermark_high` is the
    scope's bound for incremental tables, already in the watermark column's own type (a `timestamp`
    column gets the source's local time, as the extract compares it)."""

    def __init__(self, conn: psycopg.Connection[Any], relation: sql.Composable, table: TableConfig,
                 columns: list[Column], *, watermark_high: Any, select_list: sql.Composable, fail: Fail) -> None:
        by_name = {c.name: c for c in columns}
        self.conn = conn
        self.relation = relation
        self.table = table
        self.fail = fail
        self.select_list = select_list
        self.key_cols = [by_name[k] for k in table.key]
        # Enum keys compare as text on the source (bronze holds text): both sides order them alike.
        self.key_exprs: list[sql.Composable] = [
            sql.SQL("{}::{}").format(sql.Identifier("q", c.name), sql.SQL(c.select_cast)) if c.select_cast
            else sql.Identifier("q", c.name) for c in self.key_cols]
        self.key_texts = [sql.SQL("({})::text").format(e) for e in self.key_exprs]
        self.row_text = row_text(columns, table)
        self.row_hash = sql.SQL("md5({})").format(self.row_text)
        self.scope: list[sql.Composable] = []
        self.scope_params: list[Any] = []
        if table.mode == "incremental":
            wm = sql.Identifier("q", table.watermark or "")
            self.scope.append(sql.SQL("{} IS NOT NULL").format(wm))
            if watermark_high is not None:
                self.scope.append(sql.SQL("{} <= %s").format(wm))
                self.scope_params.append(watermark_high)

    # ---------------------------------------------------------------- SQL pieces
    def _key_tuple(self, exprs: Sequence[sql.Composable]) -> sql.Composable:
        return sql.SQL("({})").format(sql.SQL(", ").join(exprs))

    def _params_tuple(self) -> sql.Composable:
        return self._key_tuple([sql.SQL("%s::{}").format(sql.SQL(c.type)) for c in self.key_cols])

    def _where(self, rng: KeySpan | None, scoped: bool = True) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = list(self.scope) if scoped else []
        params: list[Any] = list(self.scope_params) if scoped else []
        if rng is not None and rng.low is not None:
            parts.append(sql.SQL("{} > {}").format(self._key_tuple(self.key_exprs), self._params_tuple()))
            params += list(rng.low)
        if rng is not None and rng.high is not None:
            parts.append(sql.SQL("{} <= {}").format(self._key_tuple(self.key_exprs), self._params_tuple()))
            params += list(rng.high)
        if not parts:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params

    def _join_keys(self) -> sql.Composable:
        """JOIN the keys given as one text[] per key column (parameters), cast to each column's type."""
        aliases = [f"k{i}" for i in range(len(self.key_cols))]
        on = sql.SQL(" AND ").join(
            sql.SQL("{} = {}::{}").format(e, sql.Identifier("u", a), sql.SQL(c.type))
            for e, a, c in zip(self.key_exprs, aliases, self.key_cols, strict=True))
        return sql.SQL(" JOIN unnest({}) AS u({}) ON {}").format(
            sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in aliases),
            sql.SQL(", ").join(map(sql.Identifier, aliases)), on)

    def _in_transaction(self, what: str, work: Callable[[], T]) -> T:
        settings = sql.SQL(", ").join(sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
                                      for k, v in DIGEST_SETTINGS.items())
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("SELECT {}").format(settings))
                return work()
        except psycopg.Error as exc:
            raise self.fail(exc, what) from None

    # ---------------------------------------------------------------- KeyRanges
    def _collatable(self) -> list[bool]:
        return [c.type.split("(")[0] in COLLATABLE_TYPES for c in self.key_cols]

    def collations(self) -> list[str | None]:
        shown = [sql.SQL("pg_collation_for((SELECT {} FROM {} AS q LIMIT 0))").format(e, self.relation)
                 for e, ok in zip(self.key_exprs, self._collatable(), strict=True) if ok]
        if not shown:
            return [None] * len(self.key_cols)
        exprs = sql.SQL(", ").join(shown)

        def work() -> list[str | None]:
            try:
                with self.conn.transaction():  # a savepoint: the fallback below runs after a failure
                    row = self.conn.execute(sql.SQL(
                        "SELECT {}, (SELECT d.datlocprovider::text || ' ' || coalesce(d.daticulocale, d.datcollate) "
                        "FROM pg_database d WHERE d.datname = current_database())").format(exprs)).fetchone()
            except psycopg.errors.UndefinedColumn:  # before PostgreSQL 15 (no daticulocale): libc only
                row = self.conn.execute(sql.SQL("SELECT {}, (SELECT 'c ' || datcollate FROM pg_database "
                                                "WHERE datname = current_database())").format(exprs)).fetchone()
            assert row is not None
            found = iter(f"default: {row[-1]}" if v == '"default"' else str(v) for v in row[:-1])
            return [next(found) if ok else None for ok in self._collatable()]

        return self._in_transaction("reading the key's collation", work)

    def use_binary_order(self) -> None:
        self.key_exprs = [sql.SQL('({}) COLLATE "C"').format(e) if ok else e
                          for e, ok in zip(self.key_exprs, self._collatable(), strict=True)]
        self.key_texts = [sql.SQL("({})::text").format(e) for e in self.key_exprs]

    def digest(self, rng: KeySpan) -> RangeDigest:
        where, params = self._where(rng)
        query = sql.SQL("SELECT count(*), coalesce(sum(hashtextextended({}, 0)), 0)::text FROM {} AS q{}").format(
            self.row_text, self.relation, where)

        def work() -> RangeDigest:
            row = self.conn.execute(query, params).fetchone()
            assert row is not None
            return RangeDigest(int(row[0]), int(row[1]))

        return self._in_transaction("comparing a key range", work)

    def quantiles(self, rng: KeySpan, every: int) -> list[Key]:
        where, params = self._where(rng)
        names = [sql.Identifier(f"k{i}") for i in range(len(self.key_cols))]
        query = sql.SQL("SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn FROM {} AS q{}) AS s "
                        "WHERE s.rn %% %s = 0 ORDER BY s.rn").format(
            sql.SQL(", ").join(names),
            sql.SQL(", ").join(sql.SQL("{} AS {}").format(t, n) for t, n in zip(self.key_texts, names, strict=True)),
            sql.SQL(", ").join(self.key_exprs), self.relation, where)
        return self._in_transaction("splitting a key range", lambda: [
            tuple(str(v) for v in row) for row in self.conn.execute(query, [*params, max(1, every)]).fetchall()])

    def sampled_quantiles(self, every: int, table_rows: float) -> list[Key]:
        """Boundaries about `every` rows apart from a block sample of about 64 keys per part (of a
        table of about `table_rows` rows) — much cheaper than numbering every row, and ranges need
        not be of equal size. Only for a relation that is a table (TABLESAMPLE)."""
        percent = min(100.0, 100.0 * 64 * max(1.0, table_rows / every) / max(table_rows, 1.0))
        where, params = self._where(None)
        query = sql.SQL("SELECT {} FROM {} AS q TABLESAMPLE SYSTEM ({}){} ORDER BY {}").format(
            sql.SQL(", ").join(self.key_texts), self.relation, sql.Literal(percent), where,
            sql.SQL(", ").join(self.key_exprs))
        sample = self._in_transaction("sampling keys", lambda: [
            tuple(str(v) for v in row) for row in self.conn.execute(query, params).fetchall()])
        step = max(1, round(len(sample) * every / max(table_rows, 1.0)))
        return sample[step - 1::step]

    def hashes(self, rng: KeySpan) -> dict[Key, str]:
        where, params = self._where(rng)
        query = sql.SQL("SELECT {}, {} FROM {} AS q{}").format(
            sql.SQL(", ").join(self.key_texts), self.row_hash, self.relation, where)
        n = len(self.key_cols)
        return self._in_transaction("reading a key range's rows", lambda: {
            tuple(str(v) for v in row[:n]): str(row[n]) for row in self.conn.execute(query, params).fetchall()})

    def present(self, keys: Sequence[Key]) -> set[Key]:
        found: set[Key] = set()
        query = sql.SQL("SELECT {} FROM {} AS q{}").format(
            sql.SQL(", ").join(self.key_texts), self.relation, self._join_keys())
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[start:start + KEYS_PER_QUERY]
            params = [[k[i] for k in chunk] for i in range(len(self.key_cols))]

            def work(params: list[Any] = params) -> list[Key]:
                return [tuple(str(v) for v in row) for row in self.conn.execute(query, params).fetchall()]

            found.update(self._in_transaction("looking keys up", work))
        return found

    def rows(self, keys: Sequence[Key]) -> Iterator[tuple[str | None, ...]]:
        where, scope_params = self._where(None)
        query = sql.SQL("COPY (SELECT {} FROM {} AS q{}{}) TO STDOUT").format(
            self.select_list, self.relation, self._join_keys(), where)
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[start:start + KEYS_PER_QUERY]
            params = [[k[i] for k in chunk] for i in range(len(self.key_cols))] + scope_params

            def work(params: list[Any] = params) -> list[tuple[str | None, ...]]:
                with self.conn.cursor() as cur, cur.copy(query, params) as copy:
                    return [tuple(None if v is None else str(v) for v in row) for row in copy.rows()]

            yield from self._in_transaction("reading rows by key", work)
