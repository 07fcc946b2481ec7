"""What a CDC source hands the pipeline: decoded changes in pages, and the slot's health.

The seam between the slot reader (sources/cdc/) and the warehouse side that writes change batch files
and applies them. Values are PostgreSQL's text format as pgoutput sends them; `UNCHANGED` marks an
unchanged TOASTed value (pgoutput's 'u'), which must keep bronze's value and never become NULL.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal


class _Unchanged:
    """pgoutput's 'u': an unchanged TOASTed value the update did not send."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

Value = str | None | _Unchanged
Op = Literal["I", "U", "D", "T"]  # insert, update, delete, truncate


@dataclass(frozen=True)
class RelationColumn:
    name: str
    type_oid: int
    typmod: int
    is_key: bool  # part of the replica identity


@dataclass(frozen=True)
class Relation:
    """pgoutput's Relation message: a published table's shape as of this point in the WAL."""

    oid: int
    schema: str
    table: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True)
class Change:
    op: Op
    schema: str
    table: str
    commit_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    seq: int  # order within the transaction, from 0
    new: dict[str, Value] | None  # I, U: the new row (every column); None for D and T
    old_key: dict[str, str | None] | None  # U (when the key changed or identity is FULL) and D: the old row's key


@dataclass
class Page:
    """A bounded run of whole transactions read from the slot.

    `end_lsn` is the commit LSN of the last transaction in the page (the LSN the warehouse stores and the
    slot may be advanced to once the page is applied); None when the page is empty.
    """

    changes: list[Change] = field(default_factory=list)
    relations: dict[tuple[str, str], Relation] = field(default_factory=dict)
    end_lsn: int | None = None
    last_commit_time: datetime | None = None
    transactions: int = 0
    caught_up: bool = True  # False when the page stopped at its limit and more is waiting


@dataclass
class TableLines:
    """One table's changes of a spooled page: COPY text lines in a local file (sources/cdc/lines.py has the
    layout), written while the page was read, without a Change object per change."""

    relation: Relation
    path: Path
    rows: int = 0
    txns: list[tuple[int, int]] = field(default_factory=list)  # (commit LSN, changes) per transaction, in order
    unchanged: set[str] = field(default_factory=set)  # columns that had an unchanged TOAST marker
    moved: bool = False  # an update moved a row to another key
    truncate: bool = False
    last_commit_time: datetime | None = None

    def skipped(self, through: int) -> int:
        """Changes committed at or below `through` (already applied, or inside the table's snapshot)."""
        return sum(n for lsn, n in self.txns if lsn <= through)


@dataclass
class SpooledPage:
    """A page read straight into per-table line files (see Page for the bounds). `needs_planner`: the page
    holds something the set-based apply cannot do exactly (a key change carrying an unchanged TOAST value,
    two shapes of a table in one transaction); the caller reads it again as a Page of Change objects."""

    tables: dict[tuple[str, str], TableLines] = field(default_factory=dict)
    end_lsn: int | None = None
    last_commit_time: datetime | None = None
    transactions: int = 0
    changes: int = 0
    messages: int = 0  # rows the slot sent up to the page's last commit (skipped transactions too)
    caught_up: bool = True
    needs_planner: bool = False

    def stop_before_transaction(self) -> None:
        """The transaction being read cannot join this page's set-based apply: the page ends before it, or,
        when it is the page's first transaction, the page goes to the planner instead."""
        if self.transactions:
            self.caught_up = False
        else:
            self.needs_planner = True

    def discard(self) -> None:
        for lines in self.tables.values():
            with contextlib.suppress(OSError):
                lines.path.unlink()


@dataclass(frozen=True)
class SlotHealth:
    slot: str
    exists: bool
    active: bool
    wal_status: str | None  # reserved, extended, unreserving, lost (PostgreSQL 13+)
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    current_lsn: int
    retained_bytes: int | None  # current WAL position - restart_lsn
    confirmed_lag_bytes: int | None  # current WAL position - confirmed_flush_lsn


def lsn_text(lsn: int) -> str:
    """0x16/B374D848 — PostgreSQL's pg_lsn text form."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
