"""What `/metrics` and the status page show, read from the run ledger in a few queries. Reads only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.observe.cadence import table_cadence
from bronzeline.observe.status import table_status

RUN_STATUSES = ("extracting", "uploaded", "loaded", "failed")

_LEDGER_SQL = """
SELECT t.name AS table,
       count(r.run_id) FILTER (WHERE r.status = 'extracting') AS extracting,
       count(r.run_id) FILTER (WHERE r.status = 'uploaded') AS uploaded,
       count(r.run_id) FILTER (WHERE r.status = 'loaded') AS loaded,
       count(r.run_id) FILTER (WHERE r.status = 'failed') AS failed,
       coalesce(sum(r.rows_loaded) FILTER (WHERE r.status = 'loaded'), 0) AS rows_inserted,
       coalesce(sum(r.rows_skipped) FILTER (WHERE r.status = 'loaded'), 0) AS rows_skipped,
       extract(epoch FROM now() - max(r.run_finished_at) FILTER (WHERE r.status = 'loaded'))
           AS seconds_since_load,
       (SELECT extract(epoch FROM l.run_finished_at - l.run_started_at) FROM {runs} l
         WHERE l.table_name = t.name AND l.status = 'loaded' ORDER BY l.run_id DESC LIMIT 1)
           AS last_run_seconds
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, ord)
LEFT JOIN {runs} r ON r.table_name = t.name
GROUP BY t.name, t.ord
ORDER BY t.ord
"""


def _runs(ctx: Context) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(ctx.config.warehouse.control_schema), sql.Identifier("extract_runs"))


def table_facts(ctx: Context) -> list[dict[str, Any]]:
    """Per configured table: the `status` fields, runs by status, row totals, last run duration and the
    freshness limit (2 × cadence)."""
    config = ctx.config
    names = [t.name for t in config.tables]
    status = {row["table"]: row for row in table_status(ctx)}
    with ctx.warehouse.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(_LEDGER_SQL).format(runs=_runs(ctx)), (names,))
        ledger = {row["table"]: row for row in cur.fetchall()}
    out = []
    for table in config.tables:
        row = ledger[table.name]
        try:
            found = table_cadence(config, table)
            cadence: float | None = found.seconds
            origin = found.origin
        except BronzelineError as exc:
            cadence, origin = None, str(exc)
        out.append({
            **status[table.name],
            "runs": {s: int(row[s]) for s in RUN_STATUSES},
            "rows_inserted_total": int(row["rows_inserted"]),
            "rows_skipped_total": int(row["rows_skipped"]),
            "seconds_since_load": _float(row["seconds_since_load"]),
            "last_run_seconds": _float(row["last_run_seconds"]),
            "cadence_seconds": cadence,
            "cadence_from": origin,
        })
    return out


def run_history(ctx: Context, limit: int = 500) -> list[dict[str, Any]]:
    """The latest `limit` finished runs of configured tables, oldest first, for the charts."""
    names = [t.name for t in ctx.config.tables]
    with ctx.warehouse.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(
            "SELECT * FROM (SELECT run_id, table_name, status, run_started_at, run_finished_at, rows_extracted, "
            "rows_loaded, rows_skipped, extract(epoch FROM run_finished_at - run_started_at) AS seconds "
            "FROM {} WHERE table_name = ANY(%s) AND run_finished_at IS NOT NULL ORDER BY run_id DESC LIMIT %s) r "
            "ORDER BY run_id").format(_runs(ctx)), (names, limit))
        rows = cur.fetchall()
    return [{**r, "run_started_at": _iso(r["run_started_at"]), "run_finished_at": _iso(r["run_finished_at"]),
             "seconds": _float(r["seconds"])} for r in rows]


def recent_failures(ctx: Context, limit: int = 10, days: int = 7) -> list[dict[str, Any]]:
    with ctx.warehouse.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(
            "SELECT run_id, table_name, run_started_at, run_finished_at, window_start, window_end, error_message "
            "FROM {} WHERE status = 'failed' AND run_started_at > now() - make_interval(days => %s) "
            "ORDER BY run_id DESC LIMIT %s").format(_runs(ctx)), (days, limit))
        rows = cur.fetchall()
    return [{k: _iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
