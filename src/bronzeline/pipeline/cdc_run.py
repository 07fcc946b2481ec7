"""Change data capture, the warehouse side (docs/cdc.md): the cdc tables of one source share one slot, and
one process at a time applies it (an advisory lock on the slot's name).

A pass: complete what a stopped process left in exports/ → take a snapshot of every cdc table that has
none (the first load creates the slot with an exported snapshot; a table added later is snapshotted
alone) → read pages of whole transactions, and for each: a change batch file per table (exports/<table>/)
with its manifest and run row → ONE warehouse transaction (cdc_apply.py) → the files move to processed/
→ only then is the slot advanced. A replayed page (commit LSN at or below the stored one) changes nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from bronzeline.batches.area import Area, BatchKeys
from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BatchError, SourceError, WarehouseError
from bronzeline.events import ChangesApplied, EventSink, SnapshotJoined, ignore
from bronzeline.faults import crash_point
from bronzeline.pipeline.cdc_batches import BatchFiles, PageInfo
from bronzeline.pipeline.cdc_drain import drain
from bronzeline.pipeline.cdc_schema import ShapeCheck, TableStopped
from bronzeline.pipeline.table_run import TableOutcome, TableRun
from bronzeline.sources.base import Column, Extract, Window
from bronzeline.sources.cdc.changes import Change, Page, Relation, SlotHealth, SpooledPage, TableLines, lsn_text
from bronzeline.sources.cdc.lines import lines_of_changes
from bronzeline.sources.postgres import PostgresSource
from bronzeline.store import batch
from bronzeline.store.batch import Manifest
from bronzeline.warehouse.cdc_apply import Applied, Applier, PageFile
from bronzeline.warehouse.cdc_control import CdcControl


class SnapshotReader(Protocol):
    """A snapshot consistent with a slot: every change committed at or below `through_lsn` is in it."""

    @property
    def through_lsn(self) -> int: ...

    def extract(self, source: PostgresSource, table: TableConfig, columns: list[Column]) -> Extract: ...


class ChangeReader(Protocol):
    """What the warehouse side uses of sources.cdc.slot.ChangeSource."""

    def slot_exists(self) -> bool: ...
    def create_slot(self) -> AbstractContextManager[SnapshotReader]: ...
    def snapshot_alone(self) -> AbstractContextManager[SnapshotReader]: ...
    def read_page(self, max_changes: int, after_lsn: int | None = None) -> Page: ...
    def read_pages(self, max_changes: int, folder: Path, after_lsn: int | None = None,
                   tables: set[tuple[str, str]] | None = None, *, pages: int = 1, skip_rows: int = 0
                   ) -> Generator[SpooledPage, None, None]: ...
    def advance(self, lsn: int) -> None: ...
    def heartbeat(self) -> None: ...
    def health(self) -> SlotHealth: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...


def slot_lock_key(slot: str) -> str:
    """The advisory lock of a slot's one consumer (':' never appears in a table name)."""
    return f"cdc-slot:{slot}"


def open_changes(config: Config, source: str) -> ChangeReader:
    from bronzeline.sources.cdc.slot import ChangeSource

    keys = {t.source_relation: tuple(t.key) for t in config.tables
            if t.mode == "cdc" and t.source == source and t.source_relation is not None}
    return ChangeSource(source, config.database(source), config.slot_name(), config.publication_name(), keys=keys)


class SlotApplier:
    """The cdc tables of one source (one slot), on one Context. The caller holds the slot's lock."""

    def __init__(self, ctx: Context, source: str, on_event: EventSink | None = None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.source = source
        self.slot = self.config.slot_name()
        self.tables = [t for t in self.config.tables if t.mode == "cdc" and t.source == source]
        self.by_relation = {t.source_relation: t for t in self.tables}
        self.on_event = on_event or ignore
        self.outcomes: dict[str, TableOutcome] = {t.name: TableOutcome(t.name, "loaded") for t in self.tables}
        self.shapes = ShapeCheck(ctx)

    @property
    def cdc(self) -> CdcControl:
        return CdcControl(self.ctx.warehouse, self.config.warehouse.control_schema)

    def _applier(self) -> Applier:
        wcfg = self.config.warehouse
        return Applier(self.ctx.load_conn, wcfg.control_schema, self.config.project, wcfg.bronze_schema,
                       wcfg.lock_timeout)

    # ------------------------------------------------------------------ one page
    def apply_spooled(self, page: SpooledPage, reader: ChangeReader | None) -> None:
        """A page read into line files (ChangeSource.read_pages): its batch files, applied in one transaction,
        moved, then the slot advanced. The line files are removed in any case."""
        try:
            if page.end_lsn is None or self._replayed(page.end_lsn, reader):
                return
            batches: dict[str, TableLines | list[Change]] = {
                self.by_relation[name].name: lines for name, lines in page.tables.items() if name in self.by_relation}
            self._write_and_apply(batches, {}, page.end_lsn, page.last_commit_time, reader)
        finally:
            page.discard()

    def apply_page(self, page: Page, reader: ChangeReader | None) -> None:
        """A page of Change objects (read_page): each table's changes as line files, or planned when only the
        planner applies them exactly; then as apply_spooled."""
        if page.end_lsn is None or self._replayed(page.end_lsn, reader):
            return
        grouped: dict[str, list[Change]] = {}
        for change in page.changes:
            table = self.by_relation.get((change.schema, change.table))
            if table is not None:
                grouped.setdefault(table.name, []).append(change)
        with tempfile.TemporaryDirectory(prefix="bronzeline-cdc-") as folder:
            batches: dict[str, TableLines | list[Change]] = {}
            relations: dict[str, Relation] = {}
            for table in self.tables:
                relation = page.relations.get(table.source_relation or ("", ""))
                if table.name not in grouped:
                    continue
                if relation is not None:
                    relations[table.name] = relation
                    lines = lines_of_changes(grouped[table.name], relation, list(table.key),
                                             Path(folder) / f"{len(batches)}.copy")
                    if lines is not None:
                        batches[table.name] = lines
                        continue
                batches[table.name] = grouped[table.name]
            self._write_and_apply(batches, relations, page.end_lsn, page.last_commit_time, reader)

    def _replayed(self, end_lsn: int, reader: ChangeReader | None) -> bool:
        """A page at or below the applied LSN is in bronze already: only the slot may still need to move."""
        self.cdc.ensure_slot(self.slot, self.source)
        state = self.cdc.slot(self.slot)
        if state is not None and state.applied_lsn is not None and end_lsn <= state.applied_lsn:
            if reader is not None:
                reader.advance(end_lsn)
            return True
        return False

    def _write_and_apply(self, batches: dict[str, TableLines | list[Change]], relations: dict[str, Relation],
                         end_lsn: int, last_commit_time: datetime | None, reader: ChangeReader | None) -> None:
        state = self.cdc.slot(self.slot)
        applied = state.applied_lsn if state else None
        joined = self.cdc.tables(self.slot)
        info = PageInfo(end_lsn, last_commit_time, [t.name for t in self.tables if t.name in batches])
        files = BatchFiles(self.ctx, self.cdc)
        written: list[tuple[TableConfig, BatchKeys, Manifest]] = []
        for table in self.tables:
            found = batches.get(table.name)
            if found is None:
                continue
            if table.name not in joined:
                raise WarehouseError(f"{table.name}: has changes but no snapshot yet; run `bronzeline run "
                                     f"{table.name}` (it takes the snapshot first)")
            skip = max(joined[table.name].start_lsn, applied or 0)
            if isinstance(found, TableLines):
                types, added = self.shapes.columns(table, found.relation)
                written.append(files.lines(table, found, types, added, skip, info))
            else:
                relation = relations.get(table.name)
                types, added = self.shapes.columns(table, relation)
                written.append(files.planned(table, found, relation, types, added, skip, info))
        self._apply_stored(written, end_lsn, last_commit_time, reader)

    def _apply_stored(self, written: list[tuple[TableConfig, BatchKeys, Manifest]], end_lsn: int,
                      commit_time: datetime | None, reader: ChangeReader | None) -> None:
        store = self.ctx.store
        files = [PageFile(t, m, batch.read_verified(store, k.data, m),
                          [(str(n), str(ty)) for n, ty in m.extra.get("add_columns", [])]) for t, k, m in written]
        try:
            results = self._applier().apply_page(self.slot, files, end_lsn, commit_time)
        except BatchError as exc:
            for table, keys, manifest in written:
                self._refuse(table, keys, manifest, str(exc))
            raise
        crash_point("committed")
        for table, keys, _ in written:
            Area(store, table.name).move(keys, "processed", between=lambda: crash_point("moving"))
        if reader is not None:
            reader.advance(end_lsn)
        stopped = [t.name for t, _, _ in written]
        if stopped:
            self.cdc.set_state(stopped, "streaming", None)
        for table, keys, manifest in written:
            self._count(table, manifest, results[table.name], Area(store, table.name).moved_key(keys.data, "processed"),
                        end_lsn)

    def _count(self, table: TableConfig, manifest: Manifest, result: Applied, key: str, end_lsn: int) -> None:
        outcome = self.outcomes[table.name]
        outcome.runs.append(manifest.run_id)
        outcome.rows_extracted += result.rows_extracted
        outcome.rows_loaded += result.rows_loaded
        outcome.rows_skipped += result.rows_skipped
        outcome.rows_deleted += result.rows_deleted
        path = self.ctx.store.display(key)
        outcome.files.append(path)
        self.on_event(ChangesApplied(table.name, manifest.run_id, path, result.rows_loaded, result.rows_skipped,
                                     lsn_text(end_lsn)))

    def _refuse(self, table: TableConfig, keys: BatchKeys, manifest: Manifest, why: str) -> None:
        Area(self.ctx.store, table.name).move(keys, "failed")
        self.ctx.control.mark_failed(manifest.run_id, f"batch refused: {why}")

    # ------------------------------------------------------------------ leftovers
    def recover(self, reader: ChangeReader | None) -> None:
        """What a stopped process left in exports/: finish moves, apply whole pages (idempotent by LSN),
        refuse the rest (the slot sends those changes again), fail runs without a file."""
        control = self.ctx.control
        pages: dict[int, list[tuple[TableConfig, BatchKeys, Manifest]]] = {}
        for table in self.tables:
            area = Area(self.ctx.store, table.name)
            found = area.scan("exports")
            for key in found.temporary + found.incomplete:
                area.delete(key)
            for key in found.lone_manifests:
                manifest = area.read_manifest(key)
                if control.run_status(manifest.run_id) == "loaded" and area.data_moved_to(manifest, "processed"):
                    area.move(key, "processed")
                else:
                    area.move(key, "failed")
                    control.mark_failed(manifest.run_id, "batch refused: its data file is missing")
            for pending in found.complete:
                manifest = area.read_manifest(pending.keys.manifest)
                if control.run_status(manifest.run_id) == "loaded":
                    area.move(pending.keys, "processed", between=lambda: crash_point("moving"))
                elif manifest.extra.get("kind") == "changes":
                    pages.setdefault(int(manifest.extra["page_end_lsn"]), []).append((table, pending.keys, manifest))
                else:
                    self._refuse(table, pending.keys, manifest, "a snapshot not loaded before the process stopped; "
                                                                "the table is snapshotted again")
            alive = {b.run_id for b in found.complete}
            dead = [r for r in control.unfinished_runs(table.name) if r not in alive]
            control.fail_runs(dead, "the process stopped before its batch file was complete; the slot sends "
                                    "these changes again")
        for end_lsn, members in sorted(pages.items()):
            wanted = set(members[0][2].extra.get("page_tables", []))
            if wanted == {t.name for t, _, _ in members}:
                last = _time(members[0][2].extra.get("page_commit_time"))
                self._apply_stored(members, end_lsn, last, reader)
            else:
                for table, keys, manifest in members:
                    self._refuse(table, keys, manifest, "the rest of its page is missing; the slot sends these "
                                                        "changes again")

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, snap: SnapshotReader, tables: Sequence[TableConfig], *, alone: bool,
                 note: str | None = None, gap_from: int | None = None) -> None:
        """Load each table's snapshot as an ordinary batch (rows gone from the source are deleted from
        bronze); in its load transaction the table joins the slot at the snapshot's LSN."""
        self.cdc.ensure_slot(self.slot, self.source)
        run = TableRun(self.ctx, self.on_event)
        schema = self.config.warehouse.control_schema
        for table in tables:
            columns = self.ctx.source(table.source).describe(table)
            run._check_bronze(table, columns)
            control = self.ctx.control
            run_id = control.start_run(table.name, "cdc", None, None, None, None, None)
            outcome = self.outcomes[table.name]
            outcome.current_run = run_id

            def joined(manifest: Manifest, table: TableConfig = table) -> None:
                cdc = CdcControl(self.ctx.load_conn, schema)
                cdc.join(table.name, self.slot, snap.through_lsn, manifest.run_id)
                cdc.note_run(manifest.run_id, gap_from, snap.through_lsn, note)
                cdc.touch_watermark(table.name, None, manifest.rows, manifest.run_id)

            source = self.ctx.source(table.source)
            assert isinstance(source, PostgresSource)  # cdc tables are on PostgreSQL sources (config)
            run._extract_and_load_batch(
                table, Area(self.ctx.store, table.name), columns, Window(None, None), None, run_id, False, outcome,
                stream=snap.extract(source, table, columns), extra={"kind": "snapshot", "start_lsn": snap.through_lsn},
                in_load=joined)
            outcome.current_run = None
            self.on_event(SnapshotJoined(table.name, lsn_text(snap.through_lsn), alone))

    def join_new(self, reader: ChangeReader) -> None:
        """Snapshot the tables that have none: with the slot's creation when there is no slot yet, else alone."""
        joined = self.cdc.tables(self.slot)
        lost = [t.name for t in self.tables if t.name in joined and joined[t.name].state == "lost"]
        if lost:
            raise slot_lost(self.slot, lost, "it was lost earlier")
        new = [t for t in self.tables if t.name not in joined]
        exists = reader.slot_exists()
        if not exists:
            streaming = [t.name for t in self.tables if t.name in joined]
            if streaming:
                self.cdc.set_state(streaming, "lost", f"replication slot {self.slot} is gone")
                raise slot_lost(self.slot, streaming, "it does not exist at the source")
        if not new:
            return
        with reader.snapshot_alone() if exists else reader.create_slot() as snap:
            self.snapshot(snap, new, alone=exists)

    # ------------------------------------------------------------------ the pages
    def drain(self, reader: ChangeReader, *, until_lsn: int | None, stop: threading.Event) -> bool:
        """Apply pages until caught up (or past `until_lsn`); returns whether anything was waiting (cdc_drain.py)."""
        return drain(self, reader, until_lsn, stop)

    def applied_lsn(self) -> int | None:
        state = self.cdc.slot(self.slot)
        return state.applied_lsn if state else None

    def align(self, reader: ChangeReader) -> SlotHealth:
        """A process killed between the warehouse commit and the slot's advance: advance it now."""
        health = reader.health()
        state = self.cdc.slot(self.slot)
        if state is not None and state.applied_lsn is not None and health.confirmed_flush_lsn is not None \
                and health.confirmed_flush_lsn < state.applied_lsn:
            reader.advance(state.applied_lsn)
        return health

    def heartbeat_due(self) -> bool:
        state = self.cdc.slot(self.slot)
        if state is None:
            return False
        last = max((t for t in (state.applied_at, state.heartbeat_at) if t is not None), default=None)
        return last is None or (datetime.now(UTC) - last).total_seconds() >= self.config.cdc.heartbeat_seconds

    def heartbeat(self, reader: ChangeReader) -> None:
        reader.heartbeat()
        self.cdc.heartbeat(self.slot)


def slot_lost(slot: str, tables: list[str], why: str) -> SourceError:
    from bronzeline.errors import SlotLost

    names = " ".join(tables)
    return SlotLost(f"{', '.join(tables)}: replication slot {slot} is lost ({why}); changes since the last applied "
                    f"one cannot be streamed: run `bronzeline resync {names}`")


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


@contextlib.contextmanager
def slot_locked(ctx: Context, slot: str) -> Iterator[bool]:
    """The slot's consumer lock (a session advisory lock on the warehouse), or False when another holds it."""
    control = ctx.control
    if not control.try_lock(slot_lock_key(slot)):
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(Exception):
            control.unlock(slot_lock_key(slot))


__all__ = ["ChangeReader", "ChangesApplied", "SlotApplier", "SnapshotJoined", "TableStopped", "open_changes",
           "slot_lock_key", "slot_locked", "time"]
