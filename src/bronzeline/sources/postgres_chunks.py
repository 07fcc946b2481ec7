"""The PostgreSQL side of chunked first loads: how many rows a table has, where to cut its key range
into chunks of about equal size, and the predicate that reads one chunk.

Cuts come from the table's statistics (`pg_stats.histogram_bounds` of the first key column: equal-
depth quantiles, free to read) when the table is large and analyzed, otherwise from an exact
`ntile` over the whole key. Any cuts are correct: the chunks partition the key space (the first is
unbounded below, the last unbounded above), so a row written at any time falls in exactly one chunk;
good cuts only make the chunks even.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.key_predicate import key_predicate as shared_key_predicate
from bronzeline.sources.base import Column, KeyRange

# Above this many rows (the catalog's estimate), cut by the statistics' histogram instead of an exact
# ntile, which sorts the whole key. Tests lower it to exercise that path.
HISTOGRAM_ABOVE_ROWS = 2_000_000

_ESTIMATE_SQL = "SELECT c.reltuples::float8 FROM pg_class c WHERE c.oid = to_regclass(%s)"
_HISTOGRAM_SQL = ("SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = %s AND tablename = %s "
                  "AND attname = %s")


def row_estimate(conn: psycopg.Connection[Any], table: TableConfig, relation: sql.Composable) -> int:
    """reltuples of a `from:` table that has been analyzed or vacuumed; otherwise a count."""
    rel = table.source_relation
    if rel is not None:
        row = conn.execute(_ESTIMATE_SQL, (sql.Identifier(*rel).as_string(conn),)).fetchone()
        if row is not None and row[0] is not None and float(row[0]) >= 0:
            return int(row[0])
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} AS q").format(relation)).fetchone()
    return int(row[0]) if row else 0


def key_boundaries(conn: psycopg.Connection[Any], table: TableConfig, relation: sql.Composable,
                   count: int) -> list[tuple[str, ...]]:
    if count <= 1:
        return []
    rel = table.source_relation
    if rel is not None and row_estimate(conn, table, relation) >= HISTOGRAM_ABOVE_ROWS:
        cuts = _histogram_cuts(conn, rel, table.key[0], count)
        if cuts:
            return cuts
    return _ntile_cuts(conn, table, relation, count)


def _histogram_cuts(conn: psycopg.Connection[Any], rel: tuple[str, str], column: str,
                    count: int) -> list[tuple[str, ...]]:
    row = conn.execute(_HISTOGRAM_SQL, (rel[0], rel[1], column)).fetchone()
    bounds: list[str] = list(row[0]) if row and row[0] else []
    buckets = len(bounds) - 1
    if buckets < count:
        return []  # too coarse to cut this finely: count exactly
    picked = [bounds[round(j * buckets / count)] for j in range(1, count)]
    return [(value,) for value in dict.fromkeys(picked)]


def _ntile_cuts(conn: psycopg.Connection[Any], table: TableConfig, relation: sql.Composable,
                count: int) -> list[tuple[str, ...]]:
    """The largest key of each of the first count - 1 of `count` equal buckets of the sorted key."""
    keys = [sql.Identifier("q", k) for k in table.key]
    cols = sql.SQL(", ").join(keys)
    query = sql.SQL(
        "SELECT DISTINCT ON (b) {texts} FROM (SELECT {cols}, ntile(%s) OVER (ORDER BY {cols}) AS b FROM {rel} AS q "
        "WHERE {not_null}) AS q WHERE b < %s ORDER BY b, {desc}").format(
        texts=sql.SQL(", ").join(sql.SQL("{}::text").format(k) for k in keys), cols=cols, rel=relation,
        not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(k) for k in keys),
        desc=sql.SQL(", ").join(sql.SQL("{} DESC").format(k) for k in keys))
    rows = conn.execute(query, (count, count)).fetchall()
    return list(dict.fromkeys(tuple(str(v) for v in r) for r in rows))


def key_predicate(keys: KeyRange, columns: list[Column]) -> tuple[sql.Composable, list[Any]]:
    """The chunk's key range on the source relation `q`, the bounds cast to the source's types."""
    return shared_key_predicate(keys, {c.name: c.source_type for c in columns})
