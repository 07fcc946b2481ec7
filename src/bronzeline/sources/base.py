"""The Source seam: what the runner, migrate and verify need from any source. Nobody reaches past it
(no `.conn`, no isinstance checks on an implementation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bronzeline.config.models import TableConfig
from bronzeline.sources.cdc.changes import SlotHealth


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
class KeyRange:
    """One chunk of a chunked first load: rows whose key (compared as a row, on the first
    len(low)/len(high) key columns) is above `low` and at most `high`. Bounds are text, cast to the
    key columns' types by the source; None means unbounded. `with_nulls` also takes rows with a NULL
    key column (the first chunk does, so such a row fails the load as it would in one window)."""

    columns: tuple[str, ...]
    low: tuple[str, ...] | None  # exclusive
    high: tuple[str, ...] | None  # inclusive
    with_nulls: bool = False
    chunk: int = 0  # which chunk of how many, for messages
    of: int = 0


@dataclass(frozen=True)
class Window:
    start: datetime | None  # exclusive; None = from the beginning
    end: datetime | None  # inclusive; None for snapshots
    keys: KeyRange | None = None  # a chunk of a chunked first load: only these keys
    run_id: int | None = None  # the run reading the window (API sources log their calls against it)


@dataclass(frozen=True)
class ServerInfo:
    """Who the source's login is and what answers."""

    user: str
    version: str
    in_recovery: bool
    product: str = "PostgreSQL"  # what answers, as messages name it


@dataclass(frozen=True)
class Visibility:
    """Whether the login sees other sessions' open transactions (what a snapshot-safe bound needs)."""

    user: str
    in_recovery: bool
    superuser: bool
    read_all_stats: bool
    other_sessions: int


@dataclass
class Findings:
    """What a check found: problems stop the table (migrate fails), warnings are only printed."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CdcFindings(Findings):
    """What the cdc checks found at one source; `rejected` names the cdc tables migrate must leave alone
    (a problem about the whole source rejects all of them)."""

    rejected: set[str] = field(default_factory=set)


def key_text(key: list[str], values: tuple[object, ...]) -> str:
    """`id = 7` or `(imei, day) = (3535…, 2024-01-01)` — a key value as messages show it."""
    shown = ["NULL" if v is None else str(v) for v in values]
    if len(key) == 1:
        return f"{key[0]} = {shown[0]}"
    return f"({', '.join(key)}) = ({', '.join(shown)})"


Key = tuple[str, ...]  # a key's values as text (each key column's ::text), in `key:` order


@dataclass(frozen=True)
class KeySpan:
    """Rows whose key is above `low` (exclusive) and up to `high` (inclusive); None is unbounded."""

    low: Key | None = None
    high: Key | None = None


@dataclass(frozen=True)
class RangeDigest:
    """A key range's row count and order-independent hash (equal rows on both sides give equal digests)."""

    rows: int
    hash: int


class KeyRanges(Protocol):
    """One side of a reconcile (a source table, or its bronze copy) read by key range, within a scope
    (for incremental tables: rows whose watermark is not NULL and at most the stored watermark)."""

    def collations(self) -> list[str | None]:
        """Per key column, the collation that orders it (e.g. `"C"`, `default: libc en_US.UTF-8`), or
        None when its type has none: sides whose text keys collate differently compare in binary order."""

    def use_binary_order(self) -> None:
        """Order and compare text key columns with COLLATE "C" from now on."""

    def digest(self, rng: KeySpan) -> RangeDigest:
        """Row count and hash of the range."""

    def quantiles(self, rng: KeySpan, every: int) -> list[Key]:
        """Every `every`-th key of the range in key order: boundaries that split it into parts of
        `every` rows."""

    def hashes(self, rng: KeySpan) -> dict[Key, str]:
        """Each row's key and hash (md5 of its canonical text); callers ask for small ranges only."""

    def present(self, keys: Sequence[Key]) -> set[Key]:
        """Which of these keys exist at all, whatever their watermark."""

    def rows(self, keys: Sequence[Key]) -> Iterator[tuple[str | None, ...]]:
        """The rows in scope with these keys, each as its columns' text (as the extract writes them);
        streamed in chunks of keys."""


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
        """The window as CSV chunks (streamed, not held in memory); only `window.keys` when set."""

    # -- for chunked first loads
    def row_estimate(self, table: TableConfig) -> int:
        """About how many rows the table (or query) has: the catalog's estimate, else a count."""

    def key_boundaries(self, table: TableConfig, count: int) -> list[tuple[str, ...]]:
        """Up to count - 1 ascending, distinct key values (as text; a prefix of the key when read from
        statistics) that split the table's rows into `count` ranges of about equal size."""

    def key_ranges(self, table: TableConfig, columns: list[Column], window: Window) -> KeyRanges:
        """The table read by key range for `reconcile`; incremental tables only up to `window.end`."""

    # -- for verify: counts and samples read with the extract's own predicate on the watermark
    def server_info(self) -> ServerInfo | None:
        """The login and server version (None: the source is not a database server)."""

    def visibility(self) -> Visibility:
        """Whether the source's login sees other sessions' open transactions."""

    def watermark_indexes(self, table: TableConfig) -> int | None:
        """How many indexes lead with the watermark column (None: cannot be told, e.g. a query:)."""

    def clock(self) -> datetime:
        """The source's clock (now())."""

    def local_timestamp(self, value: datetime) -> datetime:
        """`value` as a `timestamp without time zone` in the source's time zone (how such a watermark
        column holds it)."""

    def count_rows(self, table: TableConfig, low: datetime | None = None, high: datetime | None = None) -> int:
        """Rows of the table; with a bound, only rows with low < watermark <= high (never NULL watermarks)."""

    def null_watermark_count(self, table: TableConfig) -> int:
        """Rows whose watermark is NULL (never extracted)."""

    def geometry_rows(self, table: TableConfig, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """For the given keys (as text): the key as text, then per geometry column its exact text (hex
        EWKB, or EWKT at 15 decimals per geometry_format), SRID and validity."""

    # -- change data capture (`mode: cdc`)
    def cdc_readiness(self, tables: list[TableConfig], publication: str, slot: str) -> CdcFindings:
        """What the cdc tables need at this source: logical WAL, a login that may replicate, the
        publication holding each table, a replica identity matching `key:`, room for the slot."""

    def slot_health(self, slot: str) -> SlotHealth:
        """The replication slot as the source sees it now (exists, active, wal_status, retained WAL)."""

    # -- API and push sources
    def batch_loaded(self, table: TableConfig, run_id: int) -> None:
        """The batch of `run_id` is committed in bronze: a push source forgets the spooled pushes it put
        in it (databases: nothing to do). Called after every committed load, fresh or pending."""

    # -- lifetime
    def cancel(self) -> None:
        """Cancel the query in flight, if any. Safe to call from another thread; never raises."""

    def close(self) -> None: ...
