"""What `/metrics` and the status page show, read from the run ledger in a few queries. Reads only.

The rows are the JSON shapes the page, /metrics and /api/* serve; the ledger itself is read through
the typed reads of warehouse/control_read.py."""

from __future__ import annotations

from typing import Any

from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.observe.cadence import table_cadence
from bronzeline.observe.status import table_status
from bronzeline.warehouse.control import RUN_STATUSES, RunRecord

__all__ = ["RUN_STATUSES", "recent_failures", "run_history", "table_facts"]


def table_facts(ctx: Context) -> list[dict[str, Any]]:
    """Per configured table: the `status` fields, runs by status, row totals, last run duration and the
    freshness limit (2 × cadence)."""
    config = ctx.config
    status = {row.table: row for row in table_status(ctx)}
    totals = {row.table: row for row in ctx.control.totals([t.name for t in config.tables])}
    out = []
    for table in config.tables:
        row = totals[table.name]
        try:
            found = table_cadence(config, table)
            cadence: float | None = found.seconds
            origin = found.origin
        except BronzelineError as exc:
            cadence, origin = None, str(exc)
        out.append({
            **status[table.name].as_json(),
            "runs": dict(row.runs),
            "rows_inserted_total": row.rows_inserted_total,
            "rows_skipped_total": row.rows_skipped_total,
            "seconds_since_load": row.seconds_since_load,
            "last_run_seconds": row.last_run_seconds,
            "cadence_seconds": cadence,
            "cadence_from": origin,
        })
    return out


_HISTORY_KEYS = ("run_id", "table_name", "status", "run_started_at", "run_finished_at", "rows_extracted",
                 "rows_loaded", "rows_skipped")


def history_json(run: RunRecord) -> dict[str, Any]:
    """A run as /api/runs and the charts show it."""
    whole = run.as_json()
    return {**{k: whole[k] for k in _HISTORY_KEYS}, "seconds": run.seconds}


def run_history(ctx: Context, limit: int = 500) -> list[dict[str, Any]]:
    """The latest `limit` finished runs of configured tables, oldest first, for the charts."""
    return [history_json(r) for r in ctx.control.finished_runs([t.name for t in ctx.config.tables], limit)]


_FAILURE_KEYS = ("run_id", "table_name", "run_started_at", "run_finished_at", "window_start", "window_end",
                 "error_message")


def recent_failures(ctx: Context, limit: int = 10, days: int = 7) -> list[dict[str, Any]]:
    out = []
    for run in ctx.control.recent_failures(limit, days):
        whole = run.as_json()
        out.append({k: whole[k] for k in _FAILURE_KEYS})
    return out
