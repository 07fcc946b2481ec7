"""The control schema's change-data-capture tables: `cdc_slots` (how far each slot is applied) and
`cdc_tables` (where each cdc table joined its slot, and whether it streams). Reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.sources.cdc.changes import lsn_text, parse_lsn

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class SlotState:
    slot_name: str
    source: str
    applied_lsn: int | None
    applied_at: datetime | None
    source_commit_at: datetime | None
    heartbeat_at: datetime | None


@dataclass(frozen=True)
class CdcTable:
    table_name: str
    slot_name: str
    start_lsn: int
    snapshot_at: datetime
    state: str  # streaming | stopped | lost
    error_message: str | None


def _lsn(value: object) -> int | None:
    return None if value is None else parse_lsn(str(value))


class CdcControl:
    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    # -- slots
    def slot(self, slot: str, *, for_update: bool = False) -> SlotState | None:
        row = self.conn.execute(
            sql.SQL("SELECT slot_name, source, applied_lsn::text, applied_at, source_commit_at, heartbeat_at "
                    "FROM {} WHERE slot_name = %s" + (" FOR UPDATE" if for_update else "")).format(
                self._t("cdc_slots")), (slot,)).fetchone()
        if row is None:
            return None
        return SlotState(str(row[0]), str(row[1]), _lsn(row[2]), row[3], row[4], row[5])

    def ensure_slot(self, slot: str, source: str) -> None:
        self.conn.execute(sql.SQL("INSERT INTO {} (slot_name, source) VALUES (%s, %s) ON CONFLICT (slot_name) "
                                  "DO NOTHING").format(self._t("cdc_slots")), (slot, source))

    def set_applied(self, slot: str, lsn: int, source_commit_at: datetime | None) -> None:
        """Inside the apply transaction: the slot's changes are applied through `lsn` (never moves back)."""
        self.conn.execute(
            sql.SQL("UPDATE {} SET applied_lsn = greatest(applied_lsn, %s::pg_lsn), applied_at = now(), "
                    "source_commit_at = coalesce(%s, source_commit_at) WHERE slot_name = %s").format(
                self._t("cdc_slots")), (lsn_text(lsn), source_commit_at, slot))

    def heartbeat(self, slot: str) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET heartbeat_at = now() WHERE slot_name = %s").format(
            self._t("cdc_slots")), (slot,))

    # -- tables
    def tables(self, slot: str | None = None) -> dict[str, CdcTable]:
        where = sql.SQL("WHERE slot_name = %s") if slot is not None else sql.SQL("")
        rows = self.conn.execute(
            sql.SQL("SELECT table_name, slot_name, start_lsn::text, snapshot_at, state, error_message "
                    "FROM {} {}").format(self._t("cdc_tables"), where), (slot,) if slot is not None else ()).fetchall()
        return {str(r[0]): CdcTable(str(r[0]), str(r[1]), parse_lsn(str(r[2])), r[3], str(r[4]), r[5])
                for r in rows}

    def join(self, table: str, slot: str, start_lsn: int, run_id: int) -> None:
        """Inside the snapshot's load transaction: the table streams from `start_lsn` on."""
        self.conn.execute(
            sql.SQL("INSERT INTO {} AS t (table_name, slot_name, start_lsn, snapshot_run) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (table_name) DO UPDATE SET slot_name = EXCLUDED.slot_name, "
                    "start_lsn = EXCLUDED.start_lsn, snapshot_at = now(), snapshot_run = EXCLUDED.snapshot_run, "
                    "state = 'streaming', error_message = NULL, updated_at = now()").format(self._t("cdc_tables")),
            (table, slot, lsn_text(start_lsn), run_id))

    def set_state(self, tables: list[str], state: str, message: str | None) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET state = %s, error_message = %s, updated_at = now() "
                    "WHERE table_name = ANY(%s)").format(self._t("cdc_tables")), (state, message, tables))

    def note_run(self, run_id: int, lsn_start: int | None, lsn_end: int | None, note: str | None) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET lsn_start = %s::pg_lsn, lsn_end = %s::pg_lsn, note = %s WHERE run_id = %s").format(
                self._t("extract_runs")),
            (lsn_text(lsn_start) if lsn_start is not None else None,
             lsn_text(lsn_end) if lsn_end is not None else None, note, run_id))

    def touch_watermark(self, table: str, commit_at: datetime | None, rows_loaded: int, run_id: int) -> None:
        """A cdc table's row in extract_watermarks: `last_extracted_at` is the source commit time of the last
        applied change (what `status` shows as the watermark and its lag)."""
        self.conn.execute(
            sql.SQL("INSERT INTO {} AS w (table_name, last_extracted_at, last_loaded_at, rows_loaded_last_run, "
                    "last_run_id) VALUES (%(t)s, %(at)s, now(), %(rows)s, %(run)s) ON CONFLICT (table_name) DO UPDATE "
                    "SET last_extracted_at = greatest(w.last_extracted_at, EXCLUDED.last_extracted_at), "
                    "last_loaded_at = now(), rows_loaded_last_run = EXCLUDED.rows_loaded_last_run, "
                    "last_run_id = EXCLUDED.last_run_id, updated_at = now()").format(self._t("extract_watermarks")),
            {"t": table, "at": commit_at, "rows": rows_loaded, "run": run_id})
