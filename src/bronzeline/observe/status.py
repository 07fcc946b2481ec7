"""Per-table status: last load, lag, rows, watermark, pending files, failures in 24 h."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bronzeline.batches.area import Area
from bronzeline.context import Context
from bronzeline.pipeline import chunks
from bronzeline.text import iso
from bronzeline.warehouse.control_chunks import ChunkProgress


@dataclass(frozen=True)
class TableStatus:
    table: str
    mode: str
    last_loaded_at: datetime | None
    lag_seconds: float | None  # incremental: age of the watermark; snapshot: age of the last load
    watermark: datetime | None
    rows_loaded_last_run: int | None
    rows_skipped_last_run: int | None
    pending_files: int  # complete batches waiting in exports/ (the next run loads them)
    incomplete_files: int  # other files in exports/: data without manifest, temporary or foreign files
    failures_24h: int
    last_status: str | None
    last_error: str | None  # the latest run's error, when it failed
    chunked: bool = False  # the table splits its first load (`chunks:`/`chunk_rows:`)
    chunks: ChunkProgress | None = None  # its chunked first load under way
    rows_invalid_last_run: int | None = None  # records of the last loaded run that could not be mapped (API/push)

    @property
    def chunks_text(self) -> str | None:
        """"chunk 3/8 loaded" while a chunked first load is under way."""
        return None if self.chunks is None else f"chunk {self.chunks.loaded}/{self.chunks.total} loaded"

    def as_json(self) -> dict[str, Any]:
        """The `status --json` (and /api/status) shape: ISO-8601 times with their offset, numbers as numbers.
        Tables with `chunks:`/`chunk_rows:` also have `chunks` ({"loaded", "total"} while a chunked first
        load is under way, else null)."""
        shape: dict[str, Any] = {
            "table": self.table,
            "mode": self.mode,
            "last_loaded_at": iso(self.last_loaded_at),
            "lag_seconds": self.lag_seconds,
            "watermark": iso(self.watermark),
            "rows_loaded_last_run": self.rows_loaded_last_run,
            "rows_skipped_last_run": self.rows_skipped_last_run,
            "rows_invalid_last_run": self.rows_invalid_last_run,
            "pending_files": self.pending_files,
            "incomplete_files": self.incomplete_files,
            "failures_24h": self.failures_24h,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }
        if self.chunked:
            shape["chunks"] = None if self.chunks is None else self.chunks.as_json()
        return shape


def table_status(ctx: Context) -> list[TableStatus]:
    config = ctx.config
    ctx.require_migrated()
    ledger = ctx.control.statuses([t.name for t in config.tables])
    chunked = chunks.progress(ctx, [t.name for t in config.tables if chunks.is_chunked(t)])
    out = []
    for table, row in zip(config.tables, ledger, strict=True):
        reference = row.watermark if table.mode == "incremental" else row.last_loaded_at
        lag = round((row.now - reference).total_seconds(), 3) if reference is not None else None
        pending = Area(ctx.store, table.name).count()
        out.append(TableStatus(
            table=table.name, mode=table.mode, last_loaded_at=row.last_loaded_at, lag_seconds=lag,
            watermark=row.watermark, rows_loaded_last_run=row.rows_loaded_last_run,
            rows_skipped_last_run=row.rows_skipped_last_run, rows_invalid_last_run=row.rows_invalid_last_run,
            pending_files=pending.complete,
            incomplete_files=pending.incomplete, failures_24h=row.failures_24h, last_status=row.last_status,
            last_error=row.last_error, chunked=chunks.is_chunked(table), chunks=chunked.get(table.name)))
    return out


def status_json(ctx: Context) -> list[dict[str, Any]]:
    return [row.as_json() for row in table_status(ctx)]
