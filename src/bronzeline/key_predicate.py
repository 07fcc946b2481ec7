"""The SQL condition that selects a chunk's key range, on the source (its extract) and in bronze (is the
range still empty there?): one copy, with the bounds cast to the side's own column types."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from bronzeline.sources.base import KeyRange


def key_predicate(keys: KeyRange, types: dict[str, str], alias: str = "q") -> tuple[sql.Composable, list[Any]]:
    """`ROW(key…) > ROW(low…) AND ROW(key…) <= ROW(high…)` on the relation `alias`, the bounds cast to
    `types` (column → SQL type; a btree on the key serves it); the first chunk also takes NULL keys."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for op, values in ((">", keys.low), ("<=", keys.high)):
        if values is None:
            continue
        names = keys.columns[: len(values)]
        left = sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)
        right = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(types[n])) for n in names)
        parts.append(sql.SQL("ROW({}) {} ROW({})").format(left, sql.SQL(op), right))
        params += list(values)
    cond: sql.Composable = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    if keys.with_nulls and parts:
        nulls = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(alias, n)) for n in keys.columns)
        cond = sql.SQL("(({}) OR {})").format(cond, nulls)
    return cond, params
