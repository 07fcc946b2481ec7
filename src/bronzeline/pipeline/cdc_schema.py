"""A cdc table's shape in a page against bronze's (docs/cdc.md, "Schema changes"): a column added at the
source is added with `schema_evolution: add_columns`; anything else stops the table with the statement to run."""

from __future__ import annotations

import contextlib
from typing import Any

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import Terminal, WarehouseError
from bronzeline.sources.cdc.changes import Relation
from bronzeline.warehouse import ddl, schema_diff
from bronzeline.warehouse.cdc_control import CdcControl


class TableStopped(Terminal):
    """A cdc table's source changed in a way bronze cannot follow on its own; the message says what to run."""


class ShapeCheck:
    """Checks each table's relation once per shape (the source is asked only when the shape is new)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.checked: dict[str, tuple[tuple[Any, ...], list[tuple[str, str]]]] = {}

    def columns(self, table: TableConfig, relation: Relation | None) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Bronze's column types, and the columns to add for this relation; raises TableStopped for a change
        bronze cannot follow."""
        schema = self.config.warehouse.bronze_schema
        bronze = ddl.bronze_columns(self.ctx.warehouse, schema, table.name)
        if bronze is None:
            raise WarehouseError(f"{table.name}: {schema}.{table.name} does not exist; run `bronzeline migrate`")
        types = {c.name: c.type for c in bronze}
        if relation is None:
            return types, []
        shape = tuple((c.name, c.type_oid, c.typmod) for c in relation.columns)
        seen = self.checked.get(table.name)
        if seen is not None and seen[0] == shape and all(n in types for n, _ in seen[1]):
            return types, []
        names = [c.name for c in relation.columns]
        described = {c.name: c for c in self.ctx.source(table.source).describe(table)}
        current = [described[n] for n in names if n in described]
        changes = schema_diff.compare(current, bronze)
        removed = [c.column for c in changes if c.kind == "removed" and c.column not in names]
        retyped = [c for c in changes if c.kind in ("retyped", "typmod")]
        unknown = [n for n in names if n not in described and n not in types]
        added = [(c.column, c.source_type or "text") for c in changes if c.kind == "added" and c.column in names]
        target = f"{schema}.{table.name}"
        message = ""
        if removed:
            drops = ", ".join(f"DROP COLUMN {c}" for c in removed)
            message = (f"{table.name}: column(s) {', '.join(removed)} no longer at the source; run `ALTER TABLE "
                       f"{target} {drops}` in the warehouse (or add them back at the source), then run again")
        elif retyped or unknown:
            what = "; ".join(c.describe() for c in retyped) or f"column(s) {', '.join(unknown)} changed"
            alters = ", ".join(f"ALTER COLUMN {c.column} TYPE {c.source_type}" for c in retyped)
            message = (f"{table.name}: {what}; run `ALTER TABLE {target} {alters}` in the warehouse (or "
                       f"`bronzeline resync {table.name}` after it), then run again")
        elif added and table.schema_evolution != "add_columns":
            adds = ", ".join(f"ADD COLUMN {n} {t}" for n, t in added)
            message = (f"{table.name}: column(s) {', '.join(n for n, _ in added)} added at the source; run "
                       f"`ALTER TABLE {target} {adds}` in the warehouse (or set schema_evolution: add_columns), "
                       "then run again")
        if message:
            with contextlib.suppress(Exception):
                CdcControl(self.ctx.warehouse, self.config.warehouse.control_schema).set_state(
                    [table.name], "stopped", message)
            raise TableStopped(message)
        self.checked[table.name] = (shape, added)
        return types, added

