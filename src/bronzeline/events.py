"""What happened during a run, as typed events. Stages emit them; the edges (CLI, scheduler, status
page) render them, and tests assert on their fields instead of on message text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Event:
    table: str

    def render(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Extracting(Event):
    window: str  # "(start, end]" or "a full snapshot"
    path: str

    def render(self) -> str:
        return f"extracting {self.window} into {self.path}"


@dataclass(frozen=True)
class NoNewWindow(Event):
    bound: datetime
    holder: str | None

    def render(self) -> str:
        why = f" (held back by {self.holder})" if self.holder else ""
        return f"no new window: the safe bound {self.bound} is not past the watermark{why}"


@dataclass(frozen=True)
class BoundHeldBack(Event):
    seconds: float
    holder: str

    def render(self) -> str:
        return f"bound held back {self.seconds:.1f}s by {self.holder}"


@dataclass(frozen=True)
class LoadingPending(Event):
    path: str

    def render(self) -> str:
        return f"loading pending batch {self.path}"


@dataclass(frozen=True)
class LeftoverDeleted(Event):
    path: str
    why: str

    def render(self) -> str:
        return f"deleting {self.path}: {self.why}"


@dataclass(frozen=True)
class BatchLoaded(Event):
    """A batch committed: its rows are in bronze and its run row says `loaded`. Orchestrators read
    it for asset metadata; the command line prints the table's total instead."""

    run_id: int
    path: str  # where the batch file is kept (processed/)
    window_start: datetime | None
    window_end: datetime | None
    rows_extracted: int
    rows_loaded: int
    rows_skipped: int

    def render(self) -> str:
        return (f"run {self.run_id} loaded {self.rows_loaded:,} of {self.rows_extracted:,} rows "
                f"({self.rows_skipped:,} already present) from {self.path}")


@dataclass(frozen=True)
class BatchRefused(Event):
    path: str
    why: str

    def render(self) -> str:
        return f"refusing {self.path}: {self.why}"


@dataclass(frozen=True)
class AttemptFailed(Event):
    """An attempt failed and another one follows after `retry_in` seconds."""

    attempt: int
    attempts: int
    kind: str  # transient | terminal | timed out
    message: str
    retry_in: float

    def render(self) -> str:
        return (f"attempt {self.attempt} of {self.attempts} failed ({self.kind}): {self.message}; "
                f"retrying in {self.retry_in:.1f}s")


@dataclass(frozen=True)
class SucceededAfterRetry(Event):
    status: str
    attempt: int
    attempts: int

    def render(self) -> str:
        return f"{self.status} on attempt {self.attempt} of {self.attempts}"


@dataclass(frozen=True)
class Unrecorded(Event):
    count: int

    def render(self) -> str:
        return (f"{self.count} failed attempt(s) not yet in the run ledger (the warehouse is unreachable); "
                "they are written when it is back")


@dataclass(frozen=True)
class ChunksPlanned(Event):
    chunks: int
    bound: datetime
    estimated_rows: int | None

    def render(self) -> str:
        rows = f" (about {self.estimated_rows:,} rows)" if self.estimated_rows is not None else ""
        return f"first load split into {self.chunks} key ranges{rows}, each read up to {self.bound}"


@dataclass(frozen=True)
class ChangesApplied(Event):
    run_id: int
    path: str
    changes: int
    skipped: int
    lsn: str

    def render(self) -> str:
        skipped = f" ({self.skipped:,} already applied)" if self.skipped else ""
        return f"applied {self.changes:,} changes{skipped} through commit LSN {self.lsn} from {self.path}"


@dataclass(frozen=True)
class SnapshotJoined(Event):
    lsn: str
    alone: bool

    def render(self) -> str:
        how = "snapshotted alone" if self.alone else "snapshot exported with the new slot"
        return f"streams from commit LSN {self.lsn} ({how})"


EventSink = Callable[[Event], None]
Progress = Callable[[str, int], None]  # (table, bytes written so far)


def ignore(event: Event) -> None:
    """The default sink."""
