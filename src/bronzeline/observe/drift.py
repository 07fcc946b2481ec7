"""`drift`: each source (table or query result) against its bronze table — added, removed and retyped
columns, typmod changes and unit hints — with what to do about each. Reads only.

bronzeline changes bronze by itself in one case only: `schema_evolution: add_columns` lets `migrate`
add new source columns as nullable columns. It never drops or retypes a column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.abc import AdaptContext

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.observe.units import unit_change
from bronzeline.redact import redact
from bronzeline.sources.base import Column
from bronzeline.text import first_line
from bronzeline.warehouse import ddl, schema_diff
from bronzeline.warehouse.ddl import BronzeColumn
from bronzeline.warehouse.schema_diff import split_type

__all__ = ["Change", "DriftReport", "TableDrift", "compare", "drift", "split_type", "table_drift"]

Kind = Literal["added", "removed", "retyped", "typmod", "unit"]


@dataclass
class Change:
    kind: Kind
    column: str
    source_type: str | None
    bronze_type: str | None
    action: str


@dataclass
class TableDrift:
    table: str
    status: Literal["ok", "drift", "missing", "error"]
    message: str = ""
    changes: list[Change] = field(default_factory=list)


@dataclass
class DriftReport:
    project: str
    tables: list[TableDrift]

    @property
    def drifted(self) -> bool:
        return any(t.status != "ok" for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "drift": self.drifted, "tables": [asdict(t) for t in self.tables]}


def drift(ctx: Context, names: list[str] | None = None) -> DriftReport:
    tables = [ctx.config.table(n) for n in names] if names else list(ctx.config.tables)
    out = []
    for table in tables:
        try:
            out.append(table_drift(ctx, table))
        except (BronzelineError, psycopg.Error) as exc:
            text = redact(first_line(exc), ctx.config.secrets())
            out.append(TableDrift(table.name, "error", f"could not compare: {text}"))
    return DriftReport(ctx.config.project, out)


def table_drift(ctx: Context, table: TableConfig) -> TableDrift:
    schema = ctx.config.warehouse.bronze_schema
    columns = ctx.source(table.source).describe(table)
    bronze = ddl.bronze_columns(ctx.warehouse, schema, table.name)
    if bronze is None:
        return TableDrift(table.name, "missing", f"{schema}.{table.name} does not exist; run `bronzeline migrate`")
    changes = compare(table, schema, columns, bronze, ctx.warehouse)
    if not changes:
        return TableDrift(table.name, "ok", f"{len(columns)} columns agree")
    return TableDrift(table.name, "drift", f"{len(changes)} difference(s)", changes)


def compare(table: TableConfig, schema: str, source: list[Column], bronze: list[BronzeColumn],
            context: AdaptContext | None = None) -> list[Change]:
    """schema_diff's changes with what to do about each, and unit hints for a removed/added pair.
    `context` (a connection) quotes identifiers in the suggested SQL as that server expects."""
    sql_text = _Sql(schema, table.name, context)
    found = schema_diff.compare(source, bronze)
    changes: list[Change] = []
    for change in found:
        name, new, old = change.column, change.source_type or "", change.bronze_type or ""
        if change.kind == "added":
            changes.append(Change("added", name, new, None, _added(table, sql_text, name, new)))
        elif change.kind == "removed":
            changes.append(Change("removed", name, None, old, (
                f"bronzeline never drops a column: runs fail until bronze matches. Keep its history with a "
                f"`query:` that selects {sql_text('NULL::{} AS {}', sql.SQL(old), sql.Identifier(name))}, or "
                f"drop it: {sql_text('ALTER TABLE {t} DROP COLUMN {}', sql.Identifier(name))} (its history is "
                "lost); or restore it at the source")))
        else:
            changes.append(_retyped(sql_text, name, new, old))
    removed = [c for c in found if c.kind == "removed"]
    added = [c for c in found if c.kind == "added"]
    for old_col in removed:
        for new_col in added:
            hint = unit_change(old_col.column, new_col.column)
            if hint:
                changes.append(Change("unit", new_col.column, new_col.source_type, old_col.bronze_type, (
                    f"{old_col.column} became {new_col.column}: {hint}. Not a plain rename — convert bronze's "
                    "history before merging the columns, or keep one unit with a `query:` that converts at the "
                    "source")))
    return changes


class _Sql:
    """Suggested SQL built with psycopg.sql, so mixed-case and odd column names come out quoted."""

    def __init__(self, schema: str, table: str, context: AdaptContext | None) -> None:
        self.target = sql.Identifier(schema, table)
        self.context = context

    def __call__(self, template: str, *args: sql.Composable) -> str:
        return sql.SQL(template).format(*args, t=self.target).as_string(self.context)


def _added(table: TableConfig, text: _Sql, name: str, typ: str) -> str:
    if table.schema_evolution == "add_columns":
        return f"run `bronzeline migrate`: it adds {name} {typ} to {text('{t}')} as a nullable column (old rows NULL)"
    return (f"set `schema_evolution: add_columns` on table {table.name} and run `bronzeline migrate` (adds it as a "
            f"nullable column), or {text('ALTER TABLE {t} ADD COLUMN {} {}', sql.Identifier(name), sql.SQL(typ))}; "
            "runs fail until then")


def _retyped(text: _Sql, name: str, new: str, old: str) -> Change:
    (nbase, nmod), (obase, omod) = split_type(new), split_type(old)
    col = sql.Identifier(name)
    alter = text("ALTER TABLE {t} ALTER COLUMN {} TYPE {}", col, sql.SQL(new))
    if nbase != obase:
        return Change("retyped", name, new, old, (
            f"bronzeline never retypes a column: {alter} USING {text('{}::{}', col, sql.SQL(new))} (check that "
            f"every existing value converts), or cast it back to {old} in a `query:`"))
    if nbase.startswith("geometry") or nbase.startswith("geography"):
        nparts, oparts = nmod.split(","), omod.split(",")
        if len(nparts) == 2 and len(oparts) == 2 and nparts[1] != oparts[1]:
            return Change("typmod", name, new, old, (
                f"the SRID changed from {oparts[1]} to {nparts[1]}: reproject bronze with {alter} USING "
                f"{text('ST_Transform({}, ' + nparts[1] + ')', col)}, or ST_Transform back to {oparts[1]} in a "
                "`query:`"))
        return Change("typmod", name, new, old, (
            f"the geometry type changed: {alter} (fails if existing rows do not fit), or cast in a `query:`"))
    if _widens(nmod, omod):
        return Change("typmod", name, new, old, f"widened at the source; safe to follow: {alter}")
    return Change("typmod", name, new, old, (
        f"narrowed at the source: existing bronze values may not fit; check them, then {alter} — or keep bronze "
        "wider (then change the source type back, or cast to the wider type in a `query:`)"))
def _widens(new: str, old: str) -> bool:
    """Does typmod `new` hold every value typmod `old` holds (varchar(n), numeric(p,s), time(p))?"""
    if not new:
        return True  # unbounded
    if not old:
        return False
    try:
        n, o = [int(x) for x in new.split(",")], [int(x) for x in old.split(",")]
    except ValueError:
        return False
    if len(n) == 2 and len(o) == 2:  # numeric(precision, scale)
        return n[1] >= o[1] and n[0] - n[1] >= o[0] - o[1]
    if len(n) == 1 and len(o) == 2:  # numeric(p) is numeric(p, 0)
        return o[1] == 0 and n[0] >= o[0]
    return len(n) == len(o) == 1 and n[0] >= o[0]
