"""The Source seam: what the runner needs from any source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bronzeline.config.models import TableConfig


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the type bronze gets, e.g. numeric(5,2), geometry(Point,4326), text for enums
    source_type: str  # the type as the source declares it
    select_cast: str | None = None  # enums: select col::text (col::text[] for arrays of enums)
    is_geometry: bool = False


@dataclass(frozen=True)
class Bound:
    """The upper bound of a window and how it was chosen, all from the source's clock."""

    upper: datetime
    source_clock: datetime
    oldest_xact_start: datetime | None
    holder: str | None  # who held the bound back: "pid 123 (psql) since …"

    @property
    def holdback(self) -> timedelta:
        return self.source_clock - self.upper


@dataclass(frozen=True)
class Window:
    start: datetime | None  # exclusive; None = from the beginning
    end: datetime | None  # inclusive; None for snapshots


@dataclass
class Findings:
    """What a check found: problems stop the table (migrate fails), warnings are only printed."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def key_text(key: list[str], values: tuple[object, ...]) -> str:
    """`id = 7` or `(imei, day) = (3535…, 2024-01-01)` — a key value as messages show it."""
    shown = ["NULL" if v is None else str(v) for v in values]
    if len(key) == 1:
        return f"{key[0]} = {shown[0]}"
    return f"({', '.join(key)}) = ({', '.join(shown)})"


class Extract(Protocol):
    rows: int | None  # set once the chunks are exhausted

    def __iter__(self) -> Iterator[bytes]: ...


class Source(Protocol):
    def describe(self, table: TableConfig) -> list[Column]:
        """The table's (or query's) columns with the types bronze takes."""

    def check(self, table: TableConfig, columns: list[Column]) -> list[str]:
        """Problems that stop the table from running (missing watermark, invisible transactions…)."""

    def key_problems(self, table: TableConfig) -> Findings:
        """Whether `key:` is unique at the source, as far as a cheap look can tell (catalog, bounded probe)."""

    def watermark_nullable(self, table: TableConfig) -> bool | None:
        """Whether the watermark column admits NULL (None when it cannot be told)."""

    def upper_bound(self, table: TableConfig) -> Bound:
        """A snapshot-safe inclusive upper bound for the next window."""

    def extract(self, table: TableConfig, columns: list[Column], window: Window) -> Extract:
        """The window as CSV chunks (streamed, not held in memory)."""

    def close(self) -> None: ...
