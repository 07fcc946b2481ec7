"""Reads of `<control>.cdc_slots`: what the warehouse has applied from each slot, and the last heartbeat.

Status, /metrics, the page and verify read it beside the slot's own health at the source. The table
comes with the change data capture migration; before it exists (or when the login may not read it)
there is simply no record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.sources.cdc.changes import parse_lsn

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class AppliedSlot:
    slot_name: str
    applied_lsn: int | None  # commit LSN of the last applied transaction
    applied_at: datetime | None  # when the warehouse committed it
    source_commit_at: datetime | None  # when that transaction committed at the source
    heartbeat_at: datetime | None  # the last heartbeat
    now: datetime  # the warehouse's clock, for lags


def applied_slots(conn: Conn, schema: str, slots: list[str]) -> dict[str, AppliedSlot]:
    """The warehouse's record of each named slot; a slot without one (or no cdc_slots table) is absent."""
    table = sql.Identifier(schema, "cdc_slots")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(conn),)).fetchone()
    if not slots or not exists or not exists[0]:
        return {}
    try:
        rows = conn.execute(sql.SQL(
            "SELECT slot_name, applied_lsn::text, applied_at, source_commit_at, heartbeat_at, now() "
            "FROM {} WHERE slot_name = ANY(%s)").format(table), (slots,)).fetchall()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.InsufficientPrivilege):
        return {}  # another shape or no grant: no record to show, the source's view still stands
    return {str(r[0]): AppliedSlot(str(r[0]), parse_lsn(str(r[1])) if r[1] else None, r[2], r[3], r[4], r[5])
            for r in rows}
