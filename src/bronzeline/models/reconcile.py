"""The `reconcile` check's counts: a bronze table's rows against its source's, up to the table's
watermark (rows past it may not be loaded yet), counted with the same predicate on both sides as
`verify` does. Snapshot tables compare whole counts."""

from __future__ import annotations

from typing import Protocol

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import ConfigError, Terminal
from bronzeline.observe.probe import TableProbe


class NothingLoaded(Terminal):
    """A reconcile check on a table that has no watermark yet."""


class ReconcileCounter(Protocol):
    def __call__(self, relation: str) -> tuple[int, int]:
        """`schema.name` of a bronze table → (source rows, bronze rows) up to its watermark. Raises a
        BronzelineError when the relation is not a configured table or nothing was loaded yet."""


def reconcile_counter(ctx: Context) -> ReconcileCounter:
    """A counter over the config's tables (`<bronze_schema>.<table.name>`), through the Source protocol
    and the warehouse connection of `ctx`."""
    bronze = ctx.config.warehouse.bronze_schema
    tables: dict[str, TableConfig] = {f"{bronze}.{t.name}": t for t in ctx.config.tables}

    def count(relation: str) -> tuple[int, int]:
        table = tables.get(relation)
        if table is None:
            known = ", ".join(sorted(tables)) or "none"
            raise ConfigError(f"{relation}: reconcile works on bronze tables of the config, and {relation} is "
                              f"not one (configured: {known}); move the check to one of them or drop it")
        probe = TableProbe(ctx, table)
        if table.mode == "snapshot":
            return probe.source_rows(), probe.bronze_rows()
        bound = probe.watermark()
        if bound is None:
            raise NothingLoaded(f"{relation}: nothing was loaded yet, so there is no watermark to reconcile up to; "
                                f"run `bronzeline run {table.name}` first")
        return probe.source_rows(high=bound), probe.bronze_rows(high=bound)

    return count
