"""A replication slot's health, read at the source: whether it exists and is in use, its `wal_status`,
and how much WAL it holds back. Reads only; any login can read pg_replication_slots.

The slot reader's `health()`, `status`, `/metrics`, the status page and `verify` all read it here.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bronzeline.sources.cdc.changes import SlotHealth, parse_lsn

# On a standby the WAL position is the replay position (pg_current_wal_lsn() raises there).
_SLOT_SQL = """
SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text,
       s.slot_name IS NOT NULL, coalesce(s.active, false), s.wal_status, s.restart_lsn::text,
       s.confirmed_flush_lsn::text
FROM (SELECT 1) AS one
LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


def read_slot_health(conn: psycopg.Connection[Any], slot: str) -> SlotHealth:
    """The slot as the source sees it now. A slot that does not exist has `exists=False` and no LSNs;
    retained bytes = current WAL position - restart_lsn (what the server must keep for the slot),
    confirmed lag bytes = current WAL position - confirmed_flush_lsn (what is not yet applied)."""
    row = conn.execute(_SLOT_SQL, (slot,)).fetchone()
    assert row is not None
    current_text, exists, active, wal_status, restart_text, confirmed_text = row
    current = parse_lsn(str(current_text)) if current_text else 0
    restart = parse_lsn(str(restart_text)) if restart_text else None
    confirmed = parse_lsn(str(confirmed_text)) if confirmed_text else None
    return SlotHealth(
        slot=slot, exists=bool(exists), active=bool(active), wal_status=wal_status,
        restart_lsn=restart, confirmed_flush_lsn=confirmed, current_lsn=current,
        retained_bytes=max(current - restart, 0) if restart is not None else None,
        confirmed_lag_bytes=max(current - confirmed, 0) if confirmed is not None else None)
