"""Per-table status: last load, lag, rows, watermark, pending files, failures in 24 h."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from bronzeline.context import Context
from bronzeline.store import batch
from bronzeline.warehouse import migrations

_STATUS_SQL = """
SELECT t.name,
       w.last_extracted_at,
       (SELECT max(r.run_finished_at) FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'),
       (SELECT r.rows_loaded FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'
         ORDER BY r.run_id DESC LIMIT 1),
       (SELECT r.rows_skipped FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'
         ORDER BY r.run_id DESC LIMIT 1),
       (SELECT count(*) FROM {runs} r WHERE r.table_name = t.name AND r.status = 'failed'
         AND r.run_started_at > now() - interval '24 hours'),
       (SELECT r.status FROM {runs} r WHERE r.table_name = t.name ORDER BY r.run_id DESC LIMIT 1),
       (SELECT r.error_message FROM {runs} r WHERE r.table_name = t.name ORDER BY r.run_id DESC LIMIT 1),
       now()
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, ord)
LEFT JOIN {wm} w ON w.table_name = t.name
ORDER BY t.ord
"""


def table_status(ctx: Context) -> list[dict[str, Any]]:
    config = ctx.config
    ctl = sql.Identifier(config.warehouse.control_schema)
    query = sql.SQL(_STATUS_SQL).format(runs=sql.SQL("{}.extract_runs").format(ctl),
                                        wm=sql.SQL("{}.extract_watermarks").format(ctl))
    migrations.require_current(ctx.warehouse, config.warehouse.control_schema)
    names = [t.name for t in config.tables]
    rows = ctx.warehouse.execute(query, (names,)).fetchall()
    out = []
    for table, row in zip(config.tables, rows, strict=True):
        _, watermark, last_loaded, rows_loaded, rows_skipped, failures, last_status, last_error, now = row
        assert isinstance(now, datetime)
        reference = watermark if table.mode == "incremental" else last_loaded
        lag = (now - reference).total_seconds() if isinstance(reference, datetime) else None
        pending = [k for k in ctx.store.list(batch.exports_dir(table.name)) if k.endswith(batch.MANIFEST_SUFFIX)]
        out.append({
            "table": table.name,
            "mode": table.mode,
            "last_loaded_at": _iso(last_loaded),
            "lag_seconds": round(lag, 3) if lag is not None else None,
            "watermark": _iso(watermark),
            "rows_loaded_last_run": rows_loaded,
            "rows_skipped_last_run": rows_skipped,
            "pending_files": len(pending),
            "failures_24h": failures,
            "last_status": last_status,
            "last_error": last_error if last_status == "failed" else None,
        })
    return out


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
