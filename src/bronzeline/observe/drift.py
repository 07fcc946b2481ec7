"""`drift`: each source (table or query result) against its bronze table — added, removed and retyped
columns, typmod changes and unit hints — with what to do about each. Reads only.

bronzeline changes bronze by itself in one case only: `schema_evolution: add_columns` lets `migrate`
add new source columns as nullable columns. It never drops or retypes a column.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.observe.units import unit_change
from bronzeline.redact import redact
from bronzeline.sources.base import Column
from bronzeline.warehouse import ddl

Kind = Literal["added", "removed", "retyped", "typmod", "unit"]
_MOD = re.compile(r"\(([^()]*)\)")


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


def split_type(typ: str) -> tuple[str, str]:
    """('character varying[]', '15') from 'character varying(15)[]'; the modifier is '' when absent."""
    norm = re.sub(r"\s+", " ", typ.strip().lower().removeprefix("public."))
    return re.sub(r"\s*\(", "(", _MOD.sub("", norm)).strip(), ",".join(m.replace(" ", "") for m in _MOD.findall(norm))


def drift(ctx: Context, names: list[str] | None = None) -> DriftReport:
    tables = [ctx.config.table(n) for n in names] if names else list(ctx.config.tables)
    out = []
    for table in tables:
        try:
            out.append(table_drift(ctx, table))
        except (BronzelineError, psycopg.Error) as exc:
            text = redact(str(exc).strip().splitlines()[0], ctx.config.secrets())
            out.append(TableDrift(table.name, "error", f"could not compare: {text}"))
    return DriftReport(ctx.config.project, out)


def table_drift(ctx: Context, table: TableConfig) -> TableDrift:
    schema = ctx.config.warehouse.bronze_schema
    columns = ctx.source(table.source).describe(table)
    bronze = ddl.bronze_columns(ctx.warehouse, schema, table.name)
    if bronze is None:
        return TableDrift(table.name, "missing", f"{schema}.{table.name} does not exist; run `bronzeline migrate`")
    changes = compare(table, f"{schema}.{table.name}", columns, {b.name: b.type for b in bronze})
    if not changes:
        return TableDrift(table.name, "ok", f"{len(columns)} columns agree")
    return TableDrift(table.name, "drift", f"{len(changes)} difference(s)", changes)


def compare(table: TableConfig, target: str, source: list[Column], bronze: dict[str, str]) -> list[Change]:
    src = {c.name: c.type for c in source}
    added = [n for n in src if n not in bronze]
    removed = [n for n in bronze if n not in src]
    changes: list[Change] = []
    for name in added:
        changes.append(Change("added", name, src[name], None, _added(table, target, name, src[name])))
    for name in removed:
        changes.append(Change("removed", name, None, bronze[name], (
            f"bronzeline never drops a column: runs fail until bronze matches. Keep its history with a `query:` "
            f"that selects NULL::{bronze[name]} AS {name}, or drop it: ALTER TABLE {target} DROP COLUMN {name} "
            "(its history is lost); or restore it at the source")))
    for name, typ in src.items():
        if name in bronze and split_type(typ) != split_type(bronze[name]):
            changes.append(_retyped(target, name, typ, bronze[name]))
    for old in removed:
        for new in added:
            hint = unit_change(old, new)
            if hint:
                changes.append(Change("unit", new, src[new], bronze[old], (
                    f"{old} became {new}: {hint}. Not a plain rename — convert bronze's history before merging the "
                    f"columns, or keep one unit with a `query:` that converts at the source")))
    return changes


def _added(table: TableConfig, target: str, name: str, typ: str) -> str:
    if table.schema_evolution == "add_columns":
        return f"run `bronzeline migrate`: it adds {name} {typ} to {target} as a nullable column (old rows NULL)"
    return (f"set `schema_evolution: add_columns` on table {table.name} and run `bronzeline migrate` (adds it as a "
            f"nullable column), or ALTER TABLE {target} ADD COLUMN {name} {typ}; runs fail until then")


def _retyped(target: str, name: str, new: str, old: str) -> Change:
    (nbase, nmod), (obase, omod) = split_type(new), split_type(old)
    alter = f"ALTER TABLE {target} ALTER COLUMN {name} TYPE {new}"
    if nbase != obase:
        return Change("retyped", name, new, old, (
            f"bronzeline never retypes a column: {alter} USING {name}::{new} (check that every existing value "
            f"converts), or cast it back to {old} in a `query:`"))
    if nbase.startswith("geometry") or nbase.startswith("geography"):
        nparts, oparts = nmod.split(","), omod.split(",")
        if len(nparts) == 2 and len(oparts) == 2 and nparts[1] != oparts[1]:
            return Change("typmod", name, new, old, (
                f"the SRID changed from {oparts[1]} to {nparts[1]}: reproject bronze with {alter} USING "
                f"ST_Transform({name}, {nparts[1]}), or ST_Transform back to {oparts[1]} in a `query:`"))
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
