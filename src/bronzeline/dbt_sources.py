"""`bronzeline dbt-sources`: a dbt `sources.yml` for the bronze tables, for teams whose marts live in dbt.

One source named after the project, in the bronze schema, one table per config table. Freshness comes
from each table's cadence (the longest gap its cron allows): warn after one cadence, error after two.
An incremental table's freshness reads its watermark column (`loaded_at_field`): its newest row. A
snapshot table has no such column (it is replaced whole), so its freshness asks the control schema
when its last load finished (`loaded_at_query`, dbt 1.10 or later).

The file uses dbt's current layout (`config:` holds `freshness`, `loaded_at_field` and
`loaded_at_query`, as dbt 1.10 reads them). No database is needed: everything comes from the config.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import yaml

from bronzeline.observe.cadence import table_cadence

if TYPE_CHECKING:
    from bronzeline.config.models import Config, TableConfig

_PERIODS = (("day", 86400), ("hour", 3600), ("minute", 60))


def dbt_period(interval: timedelta) -> dict[str, Any]:
    """`interval` in dbt's `{count, period}` shape: the largest of day/hour/minute that divides it
    exactly; otherwise whole minutes, rounded up (a freshness limit is never made stricter)."""
    seconds = max(int(-(-interval.total_seconds() // 1)), 60)
    for period, size in _PERIODS:
        if seconds % size == 0:
            return {"count": seconds // size, "period": period}
    return {"count": -(-seconds // 60), "period": "minute"}


def dbt_sources(config: Config) -> dict[str, Any]:
    """The sources.yml document (as data) for `config`'s bronze tables."""
    return {
        "version": 2,
        "sources": [{
            "name": config.project,
            "description": f"bronze tables loaded by bronzeline (project {config.project})",
            "schema": config.warehouse.bronze_schema,
            "tables": [_table(config, table) for table in config.tables],
        }],
    }


def _table(config: Config, table: TableConfig) -> dict[str, Any]:
    cadence = table_cadence(config, table)
    freshness = {"warn_after": dbt_period(cadence.interval), "error_after": dbt_period(2 * cadence.interval)}
    origin = table.from_ or "a query"
    entry: dict[str, Any] = {"name": table.name}
    if table.mode == "incremental" and table.watermark:
        entry["description"] = (f"{origin}, loaded incrementally on {table.watermark} "
                                f"(key {', '.join(table.key)}); cadence from {cadence.origin}")
        entry["config"] = {"loaded_at_field": table.watermark, "freshness": freshness}
    else:
        entry["description"] = f"{origin}, replaced whole each run; cadence from {cadence.origin}"
        entry["config"] = {"loaded_at_query": _last_load_query(config, table), "freshness": freshness}
    if len(table.key) == 1:
        entry["columns"] = [{"name": table.key[0], "data_tests": ["not_null", "unique"]}]
    return entry


def _last_load_query(config: Config, table: TableConfig) -> str:
    # Both names passed the config's identifier check (letters, digits, underscore); bronzeline creates
    # schemas quoted, so one with capitals must be quoted here too.
    control = config.warehouse.control_schema
    control = control if control == control.lower() else f'"{control}"'
    return (f"SELECT max(run_finished_at) FROM {control}.extract_runs "
            f"WHERE table_name = '{table.name}' AND status = 'loaded'")


def dbt_sources_yaml(config: Config) -> str:
    """The sources.yml text, with a header saying where it came from."""
    header = (f"# dbt sources for bronzeline project {config.project}, written by `bronzeline dbt-sources`.\n"
              "# Regenerate it when the config's tables or crons change rather than editing it.\n")
    body = yaml.safe_dump(dbt_sources(config), sort_keys=False, allow_unicode=True, width=10_000)
    return header + body
