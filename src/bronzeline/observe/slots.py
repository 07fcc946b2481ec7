"""The CDC slot of each source with `mode: cdc` tables, as status, /metrics, the page and verify show it:
the slot's health at the source (exists, active, wal_status, retained WAL, unconfirmed WAL) beside the
warehouse's record (last applied LSN and time, last heartbeat). A config without cdc tables contacts
no slot. A source that does not answer gives a row with its error, never a failed status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.sources.cdc.changes import SlotHealth, lsn_text
from bronzeline.text import first_line, human_duration, iso
from bronzeline.warehouse.cdc_read import AppliedSlot, applied_slots

WAL_STATUSES = ("reserved", "extended", "unreserving", "lost")


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    source: str  # the connection name
    tables: list[str]  # the cdc tables it feeds
    max_retained_wal_bytes: int  # cdc.max_retained_wal
    health: SlotHealth | None = None  # None: the source did not answer (see error)
    applied: AppliedSlot | None = None  # None: the warehouse has no record of it
    error: str | None = None

    @property
    def exists(self) -> bool | None:
        return None if self.health is None else self.health.exists

    @property
    def lost(self) -> bool:
        """Gone or invalidated: the changes since the last apply cannot be read any more."""
        return self.health is not None and (not self.health.exists or self.health.wal_status == "lost")

    @property
    def retained_bytes(self) -> int | None:
        return None if self.health is None else self.health.retained_bytes

    @property
    def over_limit(self) -> bool:
        retained = self.retained_bytes
        return retained is not None and retained > self.max_retained_wal_bytes

    @property
    def lag_seconds(self) -> float | None:
        """Now minus the source commit time of the last applied change (or since it was applied)."""
        if self.applied is None:
            return None
        since = self.applied.source_commit_at or self.applied.applied_at
        return None if since is None else round((self.applied.now - since).total_seconds(), 3)

    @property
    def idle_seconds(self) -> float | None:
        """Since the warehouse last heard from the slot (an apply or a heartbeat)."""
        if self.applied is None:
            return None
        seen = [t for t in (self.applied.applied_at, self.applied.heartbeat_at) if t is not None]
        return round((self.applied.now - max(seen)).total_seconds(), 3) if seen else None

    def as_json(self) -> dict[str, Any]:
        """The `slots` rows of `status --json` and /api/status."""
        h, a = self.health, self.applied
        return {
            "slot": self.slot,
            "source": self.source,
            "tables": self.tables,
            "exists": self.exists,
            "active": None if h is None else h.active,
            "wal_status": None if h is None else h.wal_status,
            "retained_wal_bytes": self.retained_bytes,
            "confirmed_lag_bytes": None if h is None else h.confirmed_lag_bytes,
            "max_retained_wal_bytes": self.max_retained_wal_bytes,
            "lag_seconds": self.lag_seconds,
            "applied_lsn": lsn_text(a.applied_lsn) if a is not None and a.applied_lsn is not None else None,
            "last_applied_at": iso(a.applied_at) if a is not None else None,
            "last_heartbeat_at": iso(a.heartbeat_at) if a is not None else None,
            "error": self.error,
        }


def cdc_sources(config: Config) -> dict[str, list[str]]:
    """Per source connection with cdc tables, those tables (in config order)."""
    found: dict[str, list[str]] = {}
    for table in config.tables:
        if table.mode == "cdc":
            found.setdefault(table.source, []).append(table.name)
    return found


def slot_statuses(ctx: Context) -> list[SlotStatus]:
    """One row per source with cdc tables; [] (and no source contacted) when there are none."""
    config = ctx.config
    groups = cdc_sources(config)
    if not groups:
        return []
    slot = config.slot_name()
    limit = config.cdc.max_retained_wal_bytes
    applied = applied_slots(ctx.warehouse, config.warehouse.control_schema, [slot]).get(slot)
    out = []
    for source, tables in groups.items():
        try:
            health = ctx.source(source).slot_health(slot)
        except BronzelineError as exc:
            ctx.drop_source(source)  # reconnect next time
            out.append(SlotStatus(slot, source, tables, limit, applied=applied, error=first_line(exc)))
            continue
        out.append(SlotStatus(slot, source, tables, limit, health, applied))
    return out


def slots_json(ctx: Context) -> list[dict[str, Any]]:
    return [s.as_json() for s in slot_statuses(ctx)]


def slot_line(row: dict[str, Any]) -> str:
    """One line of `status` text for a slot row (as_json shape)."""
    head = f"slot {row['slot']} at source {row['source']!r} ({', '.join(row['tables'])})"
    if row["error"]:
        return f"{head}: unknown, {row['error']}"
    resync = f"bronzeline resync {' '.join(row['tables'])}"
    if not row["exists"]:
        return f"{head}: missing; if it existed before, its changes are lost: run `{resync}`"
    if row["wal_status"] == "lost":
        return f"{head}: lost (the server removed WAL it still needed); run `{resync}`"
    parts = ["active" if row["active"] else "not active", f"wal_status {row['wal_status'] or 'unknown'}",
             f"retains {human_bytes(row['retained_wal_bytes'])} (limit {human_bytes(row['max_retained_wal_bytes'])})",
             f"unconfirmed {human_bytes(row['confirmed_lag_bytes'])}", f"lag {human_duration(row['lag_seconds'])}"]
    if row["last_heartbeat_at"]:
        parts.append(f"last heartbeat {row['last_heartbeat_at']}")
    return f"{head}: {', '.join(parts)}"


def human_bytes(value: int | None) -> str:
    """`1536` -> "1.5 kB" (powers of 1024, PostgreSQL's spelling); None -> "—"."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
