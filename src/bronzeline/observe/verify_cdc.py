"""The change data capture gates of `verify`: `cdc_source` (pre-deploy: what the source needs, as
`migrate` checks it) and `cdc_slot` (steady: the slot exists, is not lost, and retains no more WAL
than `cdc.max_retained_wal`). Each returns (status, detail, numbers); none writes anything."""

from __future__ import annotations

from datetime import timedelta

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.observe.cadence import table_cadence
from bronzeline.observe.slots import SlotStatus, human_bytes
from bronzeline.observe.verify_data import Result
from bronzeline.text import human_duration


def source_ready(ctx: Context, source: str, tables: list[str]) -> Result:
    config = ctx.config
    found = ctx.source(source).cdc_readiness([config.table(t) for t in tables], config.publication_name(),
                                             config.slot_name())
    numbers = {"tables": tables, "publication": config.publication_name(), "problems": len(found.problems)}
    if found.problems:
        return "fail", "; ".join(found.problems) + "; then run `bronzeline migrate`", numbers
    return "pass", (f"wal_level logical, the login may replicate, publication {config.publication_name()} holds "
                    f"{', '.join(tables)} and their replica identities match `key:`"), numbers


def slot_gate(config: Config, slot: SlotStatus, cadence: timedelta | None) -> Result:
    numbers = slot.as_json()
    health = slot.health
    resync = f"bronzeline resync {' '.join(slot.tables)}"
    name = f"slot {slot.slot} at source {slot.source!r}"
    if health is None:
        return "fail", f"could not read {name}: {slot.error}", numbers
    if not health.exists:
        if slot.applied is not None:
            return "fail", (f"{name} is gone (dropped): the changes since {numbers['applied_lsn']} cannot be read; "
                            f"run `{resync}`"), numbers
        return "fail", (f"{name} does not exist: the first `bronzeline run` (or `stream`) of a cdc table creates "
                        f"it; if it existed before, its changes are lost: run `{resync}`"), numbers
    if health.wal_status == "lost":
        return "fail", (f"{name} is lost: the server removed WAL it still needed (max_slot_wal_keep_size); "
                        f"run `{resync}`"), numbers
    retained, limit = human_bytes(health.retained_bytes), human_bytes(slot.max_retained_wal_bytes)
    if slot.over_limit:
        return "fail", (f"{name} retains {retained} of WAL, more than cdc.max_retained_wal ({limit}); the source "
                        "keeps it on disk until bronzeline applies it: make sure `bronzeline stream` (or a scheduled "
                        "`run`) is applying changes, see `bronzeline runs`"), numbers
    if health.wal_status == "unreserving":
        return "warn", (f"{name} is unreserving: the server will remove WAL it still needs soon "
                        f"(max_slot_wal_keep_size); apply the changes now or it will need `{resync}`"), numbers
    limit_seconds = _idle_limit(config, slot, cadence)
    idle = slot.idle_seconds
    if not health.active and slot.applied is None:
        return "warn", f"{name} is not active and nothing has been applied from it yet; run `bronzeline run`", \
            numbers
    if not health.active and idle is not None and idle > limit_seconds:
        return "warn", (f"{name} has not been read for {human_duration(idle)} (more than 2 × cadence, "
                        f"{human_duration(limit_seconds)}); it holds WAL meanwhile: is `bronzeline stream` "
                        "running?"), numbers
    state = "active" if health.active else "idle"
    return "pass", (f"{name} {state}, wal_status {health.wal_status}, retains {retained} of {limit}, lag "
                    f"{human_duration(slot.lag_seconds)}"), numbers


def _idle_limit(config: Config, slot: SlotStatus, cadence: timedelta | None) -> float:
    """2 × the shortest cadence of the slot's tables (stream tables: their cron or schedule's)."""
    return 2 * min(table_cadence(config, config.table(t), cadence).seconds for t in slot.tables)
