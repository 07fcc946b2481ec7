"""Writes of the control schema (the run ledger, watermarks) and the per-table lock. The reads are in
control_read.py; Control has both."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from bronzeline.warehouse.control_read import (
    RUN_STATUSES,
    Conn,
    ControlReader,
    FailureSummary,
    LedgerStatus,
    LedgerTotals,
    RunRecord,
    Watermark,
)

__all__ = ["RUN_STATUSES", "Control", "ControlReader", "FailureSummary", "LedgerStatus", "LedgerTotals",
           "RunRecord", "Watermark"]


class Control(ControlReader):
    """The control schema, through one warehouse connection (autocommit outside loads)."""

    def __init__(self, conn: Conn, schema: str, project: str) -> None:
        super().__init__(conn, schema)
        self.project = project

    # -- the per-table lock: a session advisory lock, released when the connection ends
    def _lock_key(self, table: str) -> str:
        return f"bronzeline:{self.project}:{self.schema}:{table}"

    def try_lock(self, table: str) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                (self._lock_key(table),)).fetchone()
        return bool(row and row[0])

    def unlock(self, table: str) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self._lock_key(table),))

    # A chunk of a chunked first load runs under the table's lock taken shared (chunks of one table run
    # side by side; a plain run of the table, which takes it exclusive, waits for none of them) and the
    # chunk's own lock.
    def try_lock_shared(self, table: str) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock_shared(hashtextextended(%s, 0))",
                                (self._lock_key(table),)).fetchone()
        return bool(row and row[0])

    def unlock_shared(self, table: str) -> None:
        self.conn.execute("SELECT pg_advisory_unlock_shared(hashtextextended(%s, 0))", (self._lock_key(table),))

    @staticmethod
    def chunk_lock_name(table: str, chunk: int) -> str:
        return f"{table}#chunk{chunk}"  # table names are letters, digits and underscores: no clash

    # -- watermarks
    def seed_watermark(self, table: str) -> None:
        self.conn.execute(
            sql.SQL("INSERT INTO {} (table_name) VALUES (%s) ON CONFLICT (table_name) DO NOTHING").format(
                self._t("extract_watermarks")), (table,))

    def set_watermark(self, table: str, value: datetime | None) -> None:
        self.conn.execute(
            sql.SQL("INSERT INTO {} (table_name, last_extracted_at) VALUES (%s, %s) ON CONFLICT (table_name) "
                    "DO UPDATE SET last_extracted_at = EXCLUDED.last_extracted_at, updated_at = now()").format(
                self._t("extract_watermarks")), (table, value))

    def advance_watermark(self, table: str, window_start: datetime | None, window_end: datetime,
                          rows_loaded: int, run_id: int) -> None:
        """Inside the load transaction. The watermark moves forward only when the window starts at or
        below it (contiguous), so a late replay or a backfill never skips or rewinds anything."""
        self.conn.execute(
            sql.SQL("""
            INSERT INTO {t} AS w (table_name, last_extracted_at, last_loaded_at, rows_loaded_last_run, last_run_id)
            VALUES (%(t)s, CASE WHEN %(start)s::timestamptz IS NULL THEN %(end)s::timestamptz END,
                    now(), %(rows)s, %(run)s)
            ON CONFLICT (table_name) DO UPDATE SET
              last_extracted_at = CASE
                WHEN (w.last_extracted_at IS NULL AND %(start)s::timestamptz IS NULL)
                  OR %(start)s::timestamptz <= w.last_extracted_at
                THEN greatest(w.last_extracted_at, %(end)s::timestamptz)
                ELSE w.last_extracted_at END,
              last_loaded_at = now(), rows_loaded_last_run = %(rows)s, last_run_id = %(run)s, updated_at = now()
            """).format(t=self._t("extract_watermarks")),
            {"t": table, "start": window_start, "end": window_end, "rows": rows_loaded, "run": run_id})

    # -- the run ledger
    def start_run(self, table: str, mode: str, window_start: datetime | None, window_end: datetime | None,
                  source_clock: datetime | None, oldest_xact_start: datetime | None,
                  holdback_seconds: float | None, attempts: int = 1) -> int:
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (table_name, mode, status, window_start, window_end, source_clock, "
                    "oldest_xact_start, holdback_seconds, attempts) "
                    "VALUES (%s, %s, 'extracting', %s, %s, %s, %s, %s, %s) "
                    "RETURNING run_id").format(self._t("extract_runs")),
            (table, mode, window_start, window_end, source_clock, oldest_xact_start, holdback_seconds, attempts),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def update_run(self, run_id: int, **fields: Any) -> None:
        assigns = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields)
        self.conn.execute(sql.SQL("UPDATE {} SET {} WHERE run_id = %s").format(self._t("extract_runs"), assigns),
                          (*fields.values(), run_id))

    def mark_uploaded(self, run_id: int, path: str, nbytes: int, checksum: str, rows: int) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'uploaded', uploaded_at = clock_timestamp(), csv_path = %s, "
                    "bytes = %s, checksum = %s, rows_extracted = %s WHERE run_id = %s").format(
                self._t("extract_runs")), (path, nbytes, checksum, rows, run_id))

    def mark_loaded(self, run_id: int, rows_extracted: int, rows_loaded: int, rows_skipped: int,
                    rows_deleted: int | None, rows_invalid: int = 0) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'loaded', run_finished_at = clock_timestamp(), rows_extracted = %s, "
                    "rows_loaded = %s, rows_skipped = %s, rows_deleted = %s, rows_invalid = %s, "
                    "error_message = NULL WHERE run_id = %s").format(self._t("extract_runs")),
            (rows_extracted, rows_loaded, rows_skipped, rows_deleted, rows_invalid, run_id))

    def mark_failed(self, run_id: int, message: str) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'failed', run_finished_at = clock_timestamp(), error_message = %s "
                    "WHERE run_id = %s AND status <> 'loaded'").format(self._t("extract_runs")),
            (message[:4000], run_id))

    def fail_runs(self, run_ids: list[int], message: str) -> None:
        if run_ids:
            self.conn.execute(
                sql.SQL("UPDATE {} SET status = 'failed', run_finished_at = clock_timestamp(), error_message = %s "
                        "WHERE run_id = ANY(%s) AND status IN ('extracting', 'uploaded')").format(
                    self._t("extract_runs")), (message, run_ids))

    def record_failure(self, table: str, mode: str, attempts: int, message: str, started_at: datetime,
                       finished_at: datetime) -> int:
        """A failed attempt that failed before it had a run row (or whose row a later attempt loaded)."""
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (table_name, mode, status, run_started_at, run_finished_at, attempts, "
                    "error_message) VALUES (%s, %s, 'failed', %s, %s, %s, %s) RETURNING run_id").format(
                self._t("extract_runs")), (table, mode, started_at, finished_at, attempts, message[:4000])).fetchone()
        assert row is not None
        return int(row[0])
