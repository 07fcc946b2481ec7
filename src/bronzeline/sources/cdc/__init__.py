"""Change data capture from PostgreSQL: the pgoutput decoder, the slot reader, and the seam they hand on."""

from __future__ import annotations

from bronzeline.sources.cdc.changes import (
    UNCHANGED,
    Change,
    Page,
    Relation,
    RelationColumn,
    SlotHealth,
    lsn_text,
    parse_lsn,
)
from bronzeline.sources.cdc.pgoutput import Decoder
from bronzeline.sources.cdc.slot import HEARTBEAT_PREFIX, ChangeSource
from bronzeline.sources.cdc.snapshot import SlotSnapshot

__all__ = [
    "HEARTBEAT_PREFIX",
    "UNCHANGED",
    "Change",
    "ChangeSource",
    "Decoder",
    "Page",
    "Relation",
    "RelationColumn",
    "SlotHealth",
    "SlotSnapshot",
    "lsn_text",
    "parse_lsn",
]
