"""Load one batch file into bronze in one transaction: COPY -> stage -> merge, watermark, run row."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from bronzeline.config.models import TableConfig
from bronzeline.errors import BatchError, WarehouseError, WarehouseUnreachable
from bronzeline.faults import crash_point
from bronzeline.key_predicate import key_predicate
from bronzeline.store.batch import Manifest
from bronzeline.text import first_line, from_iso
from bronzeline.warehouse import ddl
from bronzeline.warehouse.control import Control
from bronzeline.warehouse.control_chunks import ChunkPlans, ChunkRef

Conn = psycopg.Connection[Any]
STAGE = "_bronzeline_stage"


@dataclass(frozen=True)
class LoadResult:
    rows_extracted: int
    rows_loaded: int
    rows_skipped: int
    rows_deleted: int | None
    direct: bool  # COPY went straight into an empty bronze table


class BoundedQueuedWriter(QueuedLibpqWriter):
    """psycopg's queued COPY writer with a short queue (64 × 128 KB), so a slow warehouse makes the
    reader wait instead of letting memory grow."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._queue = queue.Queue(maxsize=64)  # type: ignore[assignment]


class LoadRejected(BatchError):
    """PostgreSQL refused the file's content (bad value, duplicate key, wrong column count)."""


class Loader:
    def __init__(self, conn: Conn, control: Control, bronze_schema: str, lock_timeout: str) -> None:
        self.conn = conn
        self.control = control
        self.schema = bronze_schema
        self.lock_timeout = lock_timeout

    def _bronze(self, table: TableConfig) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table.name))

    def load(self, table: TableConfig, columns: list[str], data: Iterable[bytes],
             finalize: Callable[[], Manifest], *, advance: bool, where: str, chunk: ChunkRef | None = None,
             ) -> LoadResult:
        """COPY `data` in, then call `finalize` (which completes and verifies the batch file and its
        manifest, or raises), then merge, account, advance the watermark and commit — all or nothing.

        A chunk of a chunked first load (`chunk`) takes bronze in ROW EXCLUSIVE mode only, so that
        chunks of one table load side by side (their key ranges are disjoint), always merges through the
        stage, and moves the watermark only when it is the plan's last chunk to load."""
        mode = "ROW EXCLUSIVE" if chunk is not None else "SHARE ROW EXCLUSIVE"
        duplicate = ("the key is not unique at the source; fix the table's `key:` and run `bronzeline migrate` "
                     f"(batch {where})")
        with self.translated_errors(table, where, duplicate), self.conn.transaction():
            self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
            self.conn.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(self._bronze(table), sql.SQL(mode)))
            if chunk is not None and self._chunk_range_empty(table, chunk):
                # A first load's chunk whose key range bronze does not hold yet: nothing can conflict
                # (the ranges are disjoint and this run holds the chunk's lock), so COPY straight in
                # instead of staging and merging — bronze keeps its indexes for the chunks beside it.
                rows = self._copy_into(self._bronze(table), columns, data)
                result = LoadResult(rows, rows, 0, None, direct=True)
            elif table.mode == "incremental":
                result = self._load_incremental(table, columns, data, direct_ok=chunk is None)
            else:
                result = self._load_snapshot(table, columns, data)
            manifest = finalize()
            if result.rows_extracted != manifest.rows:
                raise BatchError(f"{table.name}: {where} holds {result.rows_extracted} rows, its manifest says "
                                 f"{manifest.rows}")
            crash_point("load")
            self.control.mark_loaded(manifest.run_id, result.rows_extracted, result.rows_loaded,
                                     result.rows_skipped, result.rows_deleted)
            if chunk is not None:
                done = ChunkPlans(self.conn, self.control.schema).finish_chunk(chunk, manifest.run_id,
                                                                               result.rows_loaded)
                if done is not None:
                    self.control.advance_watermark(table.name, None, done[0], done[1], manifest.run_id)
            elif table.mode == "incremental" and advance and manifest.window_end:
                self.control.advance_watermark(
                    table.name, from_iso(manifest.window_start), datetime.fromisoformat(manifest.window_end),
                    result.rows_loaded, manifest.run_id)
        return result

    @contextmanager
    def translated_errors(self, table: TableConfig, where: str, duplicate: str) -> Iterator[None]:
        """A load's failures as users read them (nothing was committed in any of them); `duplicate` says
        what to do when two rows of the batch share one key."""
        try:
            yield
        except psycopg.errors.UniqueViolation:
            raise LoadRejected(f"{table.name}: two rows of the batch share one key ({', '.join(table.key)}): "
                               f"{duplicate}") from None
        except psycopg.errors.LockNotAvailable:
            raise WarehouseError(f"{table.name}: bronze table is locked by another session for longer than "
                                 f"lock_timeout ({self.lock_timeout}); run again later") from None
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError,
                psycopg.errors.UndefinedColumn, psycopg.errors.BadCopyFileFormat) as exc:
            raise LoadRejected(f"{table.name}: {where} could not be loaded into {self.schema}.{table.name}: "
                               f"{first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise WarehouseUnreachable(f"{table.name}: the warehouse connection failed during the load ({exc}); "
                                       "nothing was committed, run again") from None

    def _copy_into(self, target: sql.Composable, cols: list[str], data: Iterable[bytes]) -> int:
        return copy_csv(self.conn, target, cols, data)

    def _chunk_range_empty(self, table: TableConfig, chunk: ChunkRef) -> bool:
        plan = ChunkPlans(self.conn, self.control.schema).open_plan(table.name)
        if plan is None or plan.plan_id != chunk.plan_id:
            return False
        types = {c.name: c.type for c in ddl.bronze_columns(self.conn, self.schema, table.name) or []}
        cond, params = key_predicate(plan.key_range(chunk.chunk), types)
        row = self.conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} AS q WHERE {})").format(
            self._bronze(table), cond), params).fetchone()
        return bool(row and row[0])

    def _is_empty(self, table: TableConfig) -> bool:
        row = self.conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(self._bronze(table))).fetchone()
        return bool(row and row[0])

    def _stage(self, table: TableConfig, cols: list[str], data: Iterable[bytes]) -> int:
        stage = sql.Identifier(STAGE)
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, self._bronze(table)))
        rows = self._copy_into(stage, cols, data)
        if table.key:
            # Two rows with one key in one batch: the unique index refuses them (UniqueViolation).
            self.conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(
                stage, sql.SQL(", ").join(map(sql.Identifier, table.key))))
        return rows

    def _upsert(self, table: TableConfig, cols: list[str], on_conflict: str) -> int:
        idents = sql.SQL(", ").join(map(sql.Identifier, cols))
        key = sql.SQL(", ").join(map(sql.Identifier, table.key))
        query = sql.SQL("INSERT INTO {} AS b ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
            self._bronze(table), idents, idents, sql.Identifier(STAGE), key, conflict_action(table, cols, on_conflict))
        with self.conn.cursor() as cur:
            cur.execute(query)
            return int(cur.rowcount)

    def _load_incremental(self, table: TableConfig, cols: list[str], data: Iterable[bytes], *,
                          direct_ok: bool = True) -> LoadResult:
        if direct_ok and self._is_empty(table):
            # Nothing to conflict with: COPY straight in. Building the primary key once after the COPY
            # is much cheaper than maintaining it row by row; a duplicate key still fails the build.
            primary_key = self._drop_primary_key(table)
            indexes = self._drop_plain_indexes(table) if primary_key is not None else []
            rows = self._copy_into(self._bronze(table), cols, data)
            if primary_key is not None:
                # A sort that fits in memory builds the index several times faster.
                self.conn.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")
                self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                    self._bronze(table), sql.Identifier(primary_key),
                    sql.SQL(", ").join(map(sql.Identifier, table.key))))
            for definition in indexes:  # e.g. the watermark's index, made by migrate
                self.conn.execute(sql.SQL(definition))  # pg_get_indexdef's own text
            return LoadResult(rows, rows, 0, None, direct=True)
        rows = self._stage(table, cols, data)
        loaded = self._upsert(table, cols, table.on_conflict)
        return LoadResult(rows, loaded, rows - loaded, None, direct=False)

    def _drop_primary_key(self, table: TableConfig) -> str | None:
        """Drop bronze's primary key for a first load, if that is possible without waiting: dropping
        needs an exclusive lock, and a reader with the empty table open must not stall the load."""
        primary_key = self._droppable_primary_key(table)
        if primary_key is None:
            return None
        try:
            with self.conn.transaction():  # a savepoint: on a busy table, keep the key and go on
                self.conn.execute("SELECT set_config('lock_timeout', '1s', true)")
                self.conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    self._bronze(table), sql.Identifier(primary_key)))
        except psycopg.errors.LockNotAvailable:
            primary_key = None
        self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
        return primary_key

    def _drop_plain_indexes(self, table: TableConfig) -> list[str]:
        """Drop the indexes that back no constraint (the caller already holds the exclusive lock), to
        rebuild them once after a first load; returns their definitions."""
        rows = self.conn.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = "
            "i.indexrelid)", (self._bronze(table).as_string(self.conn),)).fetchall()
        for name, _ in rows:
            self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))  # regclass text: quoted as needed
        return [str(definition) for _, definition in rows]

    def _droppable_primary_key(self, table: TableConfig) -> str | None:
        """The name of bronze's primary key when it is exactly `key` and nothing depends on it
        (no foreign key points at it), so it can be rebuilt after a first load."""
        row = self.conn.execute(
            """
            SELECT c.conname FROM pg_constraint c
            WHERE c.conrelid = %s::regclass AND c.contype = 'p'
              AND (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(n, ord)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n) = %s::text[]
              AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = c.conrelid AND f.contype = 'f')
            """, (self._bronze(table).as_string(self.conn), list(table.key))).fetchone()
        return None if row is None else str(row[0])

    def _load_snapshot(self, table: TableConfig, cols: list[str], data: Iterable[bytes]) -> LoadResult:
        rows = self._stage(table, cols, data)
        bronze = self._bronze(table)
        stage = sql.Identifier(STAGE)
        with self.conn.cursor() as cur:
            if table.key:
                match = sql.SQL(" AND ").join(
                    sql.SQL("s.{0} = b.{0}").format(sql.Identifier(k)) for k in table.key)
                cur.execute(sql.SQL("DELETE FROM {} AS b WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
                    bronze, stage, match))
                deleted = int(cur.rowcount)
                loaded = self._upsert(table, cols, "update")
            else:
                cur.execute(sql.SQL("DELETE FROM {}").format(bronze))
                deleted = int(cur.rowcount)
                idents = sql.SQL(", ").join(map(sql.Identifier, cols))
                cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(bronze, idents, idents, stage))
                loaded = int(cur.rowcount)
        return LoadResult(rows, loaded, rows - loaded, deleted, direct=False)


def conflict_action(table: TableConfig, cols: list[str], on_conflict: str) -> sql.Composable:
    """ON CONFLICT's action for an insert of `cols` into bronze (aliased `b`): keep bronze's row
    (`nothing`), or (`update`) overwrite it when a value differs — and, for an incremental table, only
    with a row whose watermark is at least as new, so a replayed old batch never puts back old values."""
    others = [c for c in cols if c not in table.key]
    if on_conflict == "nothing" or not others:
        return sql.SQL("DO NOTHING")
    sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)
    # Compare as text: exact for every type, including json and geometry.
    old = sql.SQL(", ").join(sql.SQL("b.{}::text").format(sql.Identifier(c)) for c in others)
    new = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}::text").format(sql.Identifier(c)) for c in others)
    cond: sql.Composable = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(old, new)
    if table.mode == "incremental" and table.watermark:
        cond = cond + sql.SQL(" AND EXCLUDED.{0} >= b.{0}").format(sql.Identifier(table.watermark))
    return sql.SQL("DO UPDATE SET {} WHERE {}").format(sets, cond)


def copy_csv(conn: Conn, target: sql.Composable, cols: list[str], data: Iterable[bytes]) -> int:
    """COPY CSV `data` into `target`'s `cols`; the rows copied."""
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, cols)))
    with conn.cursor() as cur:
        # The queued writer sends on its own thread while this one keeps reading the source.
        with cur.copy(query, writer=BoundedQueuedWriter(cur)) as copy:
            for chunk in data:
                copy.write(chunk)
        return int(cur.rowcount)
