"""The control tables of chunked first loads (`chunk_plans`, `chunk_ranges`): reads and writes, each
returning dataclasses. A plan fixes, once, the upper bound every chunk reads up to and the key range
of each chunk, so that separate processes (workers, orchestrator tasks) run chunks independently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from bronzeline.sources.base import Bound, KeyRange
from bronzeline.warehouse.control_read import Conn


@dataclass(frozen=True)
class ChunkRef:
    """Which chunk a batch file holds (in its manifest's `extra`)."""

    plan_id: int
    chunk: int
    of: int

    def as_json(self) -> dict[str, int]:
        return {"plan_id": self.plan_id, "chunk": self.chunk, "of": self.of}

    @classmethod
    def from_json(cls, value: Any) -> ChunkRef | None:
        if not isinstance(value, dict):
            return None
        return cls(int(value["plan_id"]), int(value["chunk"]), int(value["of"]))


@dataclass(frozen=True)
class ChunkRange:
    chunk: int
    low: tuple[str, ...] | None
    high: tuple[str, ...] | None
    status: str
    run_ids: tuple[int, ...]


@dataclass(frozen=True)
class ChunkPlan:
    plan_id: int
    table_name: str
    upper: datetime
    source_clock: datetime | None
    oldest_xact_start: datetime | None
    holdback_seconds: float | None
    key_columns: tuple[str, ...]
    ranges: tuple[ChunkRange, ...]

    @property
    def count(self) -> int:
        return len(self.ranges)

    @property
    def pending(self) -> list[int]:
        """The chunks not loaded yet, in order."""
        return [r.chunk for r in self.ranges if r.status != "loaded"]

    @property
    def loaded(self) -> int:
        return self.count - len(self.pending)

    def range(self, chunk: int) -> ChunkRange:
        return self.ranges[chunk - 1]

    def key_range(self, chunk: int) -> KeyRange:
        r = self.range(chunk)
        return KeyRange(self.key_columns, r.low, r.high, with_nulls=chunk == 1, chunk=chunk, of=self.count)

    def bound(self) -> Bound:
        """The bound as it was read when the plan was made, for run rows and manifests."""
        clock = self.source_clock or self.upper
        return Bound(self.upper, clock, self.oldest_xact_start, None)

    def ref(self, chunk: int) -> ChunkRef:
        return ChunkRef(self.plan_id, chunk, self.count)


@dataclass(frozen=True)
class ChunkProgress:
    """An open plan, for `status`: how many chunks are loaded of how many."""

    table: str
    loaded: int
    total: int

    def as_json(self) -> dict[str, int]:
        return {"loaded": self.loaded, "total": self.total}


class ChunkPlans:
    """The chunk tables, through one warehouse connection."""

    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def open_plan(self, table: str) -> ChunkPlan | None:
        row = self.conn.execute(
            sql.SQL("SELECT plan_id, upper_bound, source_clock, oldest_xact_start, holdback_seconds, key_columns "
                    "FROM {} WHERE table_name = %s AND status = 'open'").format(self._t("chunk_plans")),
            (table,)).fetchone()
        if row is None:
            return None
        ranges = self.conn.execute(
            sql.SQL("SELECT chunk, key_low, key_high, status, run_ids FROM {} WHERE plan_id = %s "
                    "ORDER BY chunk").format(self._t("chunk_ranges")), (row[0],)).fetchall()
        return ChunkPlan(int(row[0]), table, row[1], row[2], row[3], row[4], tuple(row[5]), tuple(
            ChunkRange(int(c), None if lo is None else tuple(lo), None if hi is None else tuple(hi), str(s),
                       tuple(int(r) for r in runs)) for c, lo, hi, s, runs in ranges))

    def lock_creation(self, table: str) -> None:
        """Inside a transaction: one process at a time makes a table's plan (the others wait, then
        find it made)."""
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 11))",
                          (f"bronzeline-chunk-plan:{self.schema}:{table}",))

    def create(self, table: str, bound: Bound, key: list[str], cuts: list[tuple[str, ...]], count: int) -> None:
        """A new open plan of `count` chunks cut at `cuts` (ascending). With fewer cuts than count - 1
        (fewer distinct keys than chunks), the chunks past the last cut are empty: loaded at once."""
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (table_name, upper_bound, source_clock, oldest_xact_start, holdback_seconds, "
                    "key_columns, chunk_count) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING plan_id").format(
                self._t("chunk_plans")),
            (table, bound.upper, bound.source_clock, bound.oldest_xact_start, bound.holdback.total_seconds(), key,
             count)).fetchone()
        assert row is not None
        cuts = cuts[: count - 1]
        rows = []
        for chunk in range(1, count + 1):
            real = chunk <= len(cuts) + 1
            low = list(cuts[chunk - 2]) if 2 <= chunk <= len(cuts) + 1 else None
            high = list(cuts[chunk - 1]) if chunk <= len(cuts) else None
            rows.append((row[0], chunk, low, high, "pending" if real else "loaded", None if real else 0))
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (plan_id, chunk, key_low, key_high, status, rows_loaded) "
                        "VALUES (%s, %s, %s, %s, %s, %s)").format(self._t("chunk_ranges")), rows)

    def supersede(self, table: str) -> None:
        """`reseed`: the open plan (if any) is dropped; the next run makes a new one."""
        self.conn.execute(sql.SQL("UPDATE {} SET status = 'superseded', finished_at = clock_timestamp() "
                                  "WHERE table_name = %s AND status = 'open'").format(self._t("chunk_plans")), (table,))

    def add_run(self, plan_id: int, chunk: int, run_id: int) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET run_id = %s, run_ids = run_ids || %s::bigint WHERE plan_id = %s "
                                  "AND chunk = %s").format(self._t("chunk_ranges")), (run_id, run_id, plan_id, chunk))

    def finish_chunk(self, ref: ChunkRef, run_id: int, rows_loaded: int) -> tuple[datetime, int] | None:
        """Inside the chunk's load transaction: mark it loaded. The plan's row is locked first, so of
        two chunks committing together the second sees the first loaded; when this was the last chunk of
        an open plan the plan is done, and (upper bound, rows loaded by all chunks) comes back for the
        watermark."""
        plan = self.conn.execute(sql.SQL("SELECT status, upper_bound FROM {} WHERE plan_id = %s FOR UPDATE").format(
            self._t("chunk_plans")), (ref.plan_id,)).fetchone()
        self.conn.execute(sql.SQL("UPDATE {} SET status = 'loaded', run_id = %s, rows_loaded = %s, "
                                  "loaded_at = clock_timestamp() WHERE plan_id = %s AND chunk = %s").format(
            self._t("chunk_ranges")), (run_id, rows_loaded, ref.plan_id, ref.chunk))
        if plan is None or plan[0] != "open":
            return None  # a superseded plan's late batch: its rows count, the watermark is not its to move
        left = self.conn.execute(sql.SQL("SELECT count(*) FILTER (WHERE status <> 'loaded'), sum(rows_loaded) "
                                         "FROM {} WHERE plan_id = %s").format(self._t("chunk_ranges")),
                                 (ref.plan_id,)).fetchone()
        assert left is not None
        if int(left[0]):
            return None
        self.conn.execute(sql.SQL("UPDATE {} SET status = 'done', finished_at = clock_timestamp() "
                                  "WHERE plan_id = %s").format(self._t("chunk_plans")), (ref.plan_id,))
        return plan[1], int(left[1] or 0)

    def progress(self, tables: list[str]) -> dict[str, ChunkProgress]:
        """The open plans of these tables."""
        rows = self.conn.execute(
            sql.SQL("SELECT p.table_name, count(*) FILTER (WHERE r.status = 'loaded'), count(*) FROM {} p "
                    "JOIN {} r USING (plan_id) WHERE p.status = 'open' AND p.table_name = ANY(%s) "
                    "GROUP BY p.table_name").format(self._t("chunk_plans"), self._t("chunk_ranges")),
            (tables,)).fetchall()
        return {str(t): ChunkProgress(str(t), int(n), int(total)) for t, n, total in rows}
