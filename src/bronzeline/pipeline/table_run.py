"""One attempt at one table: leftovers -> pending batches -> window -> extract -> store -> load -> move
(docs/design.md, "The pipeline"). The caller (pipeline/attempts.py) holds the table's lock and decides about retries;
this module never calls back into it.

The only module that knows the source, the object store and the warehouse together.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg

from bronzeline.batches.area import Area, BatchKeys
from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BatchError, BronzelineError, ConfigError, SourceError, WarehouseError, detached
from bronzeline.events import (
    BatchLoaded,
    BatchRefused,
    BoundHeldBack,
    EventSink,
    Extracting,
    LeftoverDeleted,
    LoadingPending,
    NoNewWindow,
    Progress,
    ignore,
)
from bronzeline.faults import crash_point
from bronzeline.pipeline import chunk_run, chunks
from bronzeline.pipeline.window import SNAPSHOT, WindowPlan, plan_window, window_text
from bronzeline.redact import redact
from bronzeline.sources.api.schema import schema_for
from bronzeline.sources.api.stage import StageRows
from bronzeline.sources.base import Bound, Column, Extract, Window
from bronzeline.store import batch
from bronzeline.store.batch import BatchWriter, Manifest
from bronzeline.text import first_line, from_iso, iso
from bronzeline.warehouse import ddl
from bronzeline.warehouse.api_load import load_api
from bronzeline.warehouse.control import Control
from bronzeline.warehouse.control_chunks import ChunkRef
from bronzeline.warehouse.loader import Loader, LoadRejected, LoadResult
from bronzeline.warehouse.repair_load import is_repair, load_repair

_PROGRESS_EVERY = 8 << 20


@dataclass(frozen=True)
class RunRequest:
    """What a command asks of one table. `run`: the defaults. `backfill --until`: `window` (read
    exactly that window; the watermark stays). `reseed`: `rewind` to None. `backfill --since`:
    `rewind` to the timestamp and `extract=False`. `run --chunk K`: `chunk` (pipeline/chunk_run.py)."""

    table: str
    window: Window | None = None
    rewind: bool = False
    rewind_to: datetime | None = None
    extract: bool = True
    chunk: int | None = None  # one chunk (1-based) of the table's chunked first load


@dataclass
class TableOutcome:
    table: str
    status: Literal["loaded", "failed", "skipped"]
    runs: list[int] = field(default_factory=list)
    rows_extracted: int = 0
    rows_loaded: int = 0
    rows_skipped: int = 0
    rows_deleted: int = 0
    window: Window | None = None
    seconds: float = 0.0
    message: str = ""
    files: list[str] = field(default_factory=list)
    current_run: int | None = None  # the run under way, marked failed if the table fails
    error: BaseException | None = None  # why it failed, for attempts.classify
    attempts: int = 1  # how many attempts were made

    def add(self, run_id: int, result: LoadResult, path: str) -> None:
        self.runs.append(run_id)
        self.rows_extracted += result.rows_extracted
        self.rows_loaded += result.rows_loaded
        self.rows_skipped += result.rows_skipped
        self.rows_deleted += result.rows_deleted or 0
        self.files.append(path)


class TableRun:
    """Runs attempts for the tables of one Context (one set of connections)."""

    def __init__(self, ctx: Context, on_event: EventSink | None = None, on_progress: Progress | None = None,
                 debug: bool = False) -> None:
        self.ctx = ctx
        self.config: Config = ctx.config
        self.on_event = on_event or ignore
        self.on_progress = on_progress
        self.debug = debug
        self._next_progress = _PROGRESS_EVERY

    def attempt(self, request: RunRequest, attempt: int = 1) -> TableOutcome:
        """One attempt; the caller holds the table's lock. Failures come back in the outcome."""
        table = self.config.table(request.table)
        started = time.monotonic()
        outcome = TableOutcome(table.name, "loaded")
        try:
            if request.rewind:
                self._rewind(table, request.rewind_to)
            if request.chunk is not None:
                chunk_run.run_requested_chunk(self, table, request.chunk, outcome, attempt)
            elif request.extract:
                area = Area(self.ctx.store, table.name)
                self._clean_leftovers(table, area)
                self._load_pending(table, area, outcome)
                if request.window is not None or not chunk_run.run_pending_chunks(self, table, outcome, attempt):
                    self._extract_and_load(table, area, outcome, request.window, attempt)
        except BronzelineError as exc:
            outcome.status, outcome.message, outcome.error = "failed", self._safe(str(exc)), detached(exc)
            self._fail_run(outcome.current_run, outcome.message)
        except psycopg.Error as exc:
            outcome.status, outcome.error = "failed", detached(exc)
            outcome.message = self._safe(f"{table.name}: database error: {first_line(exc)}")
            self._fail_run(outcome.current_run, outcome.message)
        except Exception as exc:  # a bug: record it, keep the other tables going
            outcome.status = "failed"
            outcome.message = self._safe(f"{table.name}: internal error: {type(exc).__name__}: {exc}")
            if self.debug:
                outcome.message += "\n" + traceback.format_exc()
            outcome.error = detached(exc)
            self._fail_run(outcome.current_run, outcome.message)
        finally:
            if outcome.status == "failed":
                self.ctx.drop_source(table.source)  # it may be mid-COPY; the next table reconnects
            outcome.seconds = time.monotonic() - started
        return outcome

    # ---------------------------------------------------------------- steps
    def _safe(self, text: str) -> str:
        return redact(text, self.config.secrets())

    def _rewind(self, table: TableConfig, to: datetime | None) -> None:
        """Set the watermark (backfill --since, reseed). A chunked first load under way is superseded
        by `reseed` (the next run plans anew) and refuses a backfill, which would skip its chunks."""
        control = self.ctx.control
        if not chunks.is_chunked(table):
            control.set_watermark(table.name, to)
            return
        plan = chunks.open_plan(self.ctx, table.name)
        if to is not None and plan is not None:
            raise ConfigError(f"{table.name}: a chunked first load is under way ({plan.loaded}/{plan.count} chunks "
                              f"loaded); finish it with `bronzeline run {table.name}`, or start it again with "
                              f"`bronzeline reseed {table.name}`")
        with self.ctx.warehouse.transaction():
            control.set_watermark(table.name, to)
            chunks.plans(self.ctx).supersede(table.name)

    def _fail_run(self, run_id: int | None, message: str) -> None:
        if run_id is None:
            return
        try:
            self.ctx.control.mark_failed(run_id, message)
        except (psycopg.Error, BronzelineError):
            pass  # the warehouse is gone; the next run marks this run failed (no file, or its file retried)

    def _clean_leftovers(self, table: TableConfig, area: Area, only: set[int] | None = None) -> None:
        """Delete what crashed writers left (data without manifest, unfinished uploads), complete
        half-done moves, and fail runs that have no file. `only`: just these runs' (a chunk's)."""
        found = area.scan("exports")

        def ours(key: str) -> bool:
            return only is None or batch.run_id_of_key(key) in only

        for key in found.temporary:
            if ours(key):
                area.delete(key)
        for key in found.incomplete:
            if ours(key):
                self.on_event(LeftoverDeleted(table.name, area.display(key), "its manifest was never written"))
                area.delete(key)
        for key in found.lone_manifests:
            if ours(key):
                self._finish_or_refuse(table, area, key)
        alive = {b.run_id for b in found.complete}
        dead = [r for r in self.ctx.control.unfinished_runs(table.name)
                if r not in alive and (only is None or r in only)]
        self.ctx.control.fail_runs(dead, "the run stopped before its batch file was complete; "
                                         "the next run re-extracts its window")

    def _finish_or_refuse(self, table: TableConfig, area: Area, manifest_key: str) -> None:
        """A manifest alone in exports/: a move that stopped between its two files (complete it),
        or a batch whose data file is gone (refuse it)."""
        manifest = area.read_manifest(manifest_key)
        if self.ctx.control.run_status(manifest.run_id) == "loaded" and area.data_moved_to(manifest, "processed"):
            area.move(manifest_key, "processed")
        else:
            self._refuse(table, area, manifest_key, None, "its data file is missing")

    def _load_pending(self, table: TableConfig, area: Area, outcome: TableOutcome, only: set[int] | None = None,
                      ) -> None:
        for pending in area.pending():
            if only is not None and pending.run_id not in only:
                continue
            keys = pending.keys
            manifest = area.read_manifest(keys.manifest)
            status = self.ctx.control.run_status(manifest.run_id)
            if status == "loaded":
                self._batch_loaded(table, manifest.run_id)
                area.move(keys, "processed", between=lambda: crash_point("moving"))
                continue
            if status is None:
                self._refuse(table, area, keys.manifest, keys.data, f"run {manifest.run_id} is not in the run ledger")
                raise BatchError(f"{table.name}: batch {area.display(keys.data)} belongs to no known run; "
                                 "moved to failed/")
            self.on_event(LoadingPending(table.name, area.display(keys.data)))
            result = self._load(table, area, manifest, keys, advance=True)
            window = Window(from_iso(manifest.window_start), from_iso(manifest.window_end))
            self._loaded(outcome, manifest.run_id, result, area.display(area.moved_key(keys.data, "processed")),
                         window)

    def _extract_and_load(self, table: TableConfig, area: Area, outcome: TableOutcome, requested: Window | None,
                          attempt: int) -> None:
        source = self.ctx.source(table.source)
        columns = source.describe(table)
        self._check_bronze(table, columns)
        problems = source.check(table, columns)
        if problems:
            raise SourceError("; ".join(problems))
        control = self.ctx.control
        bound: Bound | None = None
        plan: WindowPlan = SNAPSHOT
        if table.mode == "incremental":
            bound = source.upper_bound(table)
            plan = plan_window(watermark=control.watermark(table.name).last_extracted_at, bound=bound.upper,
                               lookback=table.lookback_interval, requested=requested)
        first_window = False
        if table.is_api and bound is not None and plan.window.start is None:
            # An API keeps only so much history: the first window reaches back `since`, and says so in the ledger.
            plan = replace(plan, window=replace(plan.window, start=bound.upper - table.since_interval))
            first_window = True
        outcome.window = window = plan.window
        if bound is not None:
            if plan.empty:
                self.on_event(NoNewWindow(table.name, bound.upper, bound.holder))
                return
            if bound.holder:
                self.on_event(BoundHeldBack(table.name, bound.holdback.total_seconds(), bound.holder))
        run_id = control.start_run(
            table.name, table.mode, window.start, window.end,
            bound.source_clock if bound else None, bound.oldest_xact_start if bound else None,
            bound.holdback.total_seconds() if bound else None, attempts=attempt)
        outcome.current_run = run_id  # from here on, a failure marks this run failed
        extra = None
        if table.is_api:
            extra = {"endpoint": table.endpoint, **({"first_window": True} if first_window else {})}
        self._extract_and_load_batch(table, area, columns, replace(window, run_id=run_id), bound, run_id,
                                     plan.advance, outcome, extra=extra)
        outcome.current_run = None

    def _check_bronze(self, table: TableConfig, columns: list[Column]) -> None:
        """Bronze must exist, have the source's columns and a unique index on the table's key; each
        mismatch is a warehouse problem `migrate` fixes or explains — never blamed on the source."""
        schema = self.config.warehouse.bronze_schema
        wh = self.ctx.warehouse
        bronze = ddl.bronze_columns(wh, schema, table.name)
        if bronze is None:
            raise WarehouseError(f"{table.name}: {schema}.{table.name} does not exist; run `bronzeline migrate`")
        diffs = ddl.column_differences(columns, bronze)
        if diffs:
            raise WarehouseError(f"{table.name}: the source and bronze differ: {'; '.join(diffs)}. Run "
                                 "`bronzeline drift`, then change bronze (or set schema_evolution: add_columns "
                                 "and run `bronzeline migrate`)")
        if table.key and not ddl.bronze_key_matches(wh, schema, table.name, list(table.key)):
            raise WarehouseError(f"{table.name}: {schema}.{table.name} has no primary key or unique index on "
                                 f"({', '.join(table.key)}), the table's key:; run `bronzeline migrate` to "
                                 "change bronze's key")

    def _extract_and_load_batch(self, table: TableConfig, area: Area, columns: list[Column], window: Window,
                                bound: Bound | None, run_id: int, advance: bool, outcome: TableOutcome, *,
                                stream: Extract | None = None, extra: dict[str, Any] | None = None,
                                in_load: Callable[[Manifest], None] | None = None,
                                chunk: ChunkRef | None = None) -> None:
        """Stream the source into the batch file and into the warehouse at once; the warehouse commits
        only after the file and its manifest are complete and verified in the store. A failure before
        the manifest is written removes the data file: a failed run leaves no half-written batch.
        `stream` replaces the source's extract (a cdc snapshot), `extra` goes into the manifest and
        `in_load` runs inside the load transaction (on the load connection) once the manifest is verified."""
        store = self.ctx.store
        blob = self.config.blob
        content = "jsonl" if table.is_api else "csv"
        keys = area.new_batch(run_id, datetime.now(UTC), self.config.tz, blob.compression, content)
        where = area.display(keys.data)
        self.on_event(Extracting(table.name, window_text(window), where))
        if stream is None:
            stream = self.ctx.source(table.source).extract(table, columns, window)
        written: list[BatchWriter] = []
        manifest_written = False

        def crash(point: str) -> None:
            crash_point(point)
            if chunk is not None:
                crash_point(f"chunk-{chunk.chunk}-{point}")  # the crash tests' way to stop in one chunk

        label = table.name if chunk is None else f"{table.name} chunk {chunk.chunk}/{chunk.of}"  # progress bars

        def tee() -> Iterator[bytes]:
            with store.open_write(keys.data) as handle:
                writer = BatchWriter(handle, blob.compression, blob.compression_level)
                try:
                    for piece in stream:
                        writer.write(piece)
                        crash("extract")
                        self._report_progress(label, writer)
                        yield piece
                    writer.finish()
                finally:
                    writer.close()
            written.append(writer)

        def finalize() -> Manifest:
            nonlocal manifest_written
            writer = written[0]
            manifest = Manifest(
                run_id=run_id, table=table.name, mode=table.mode, data_file=keys.data_name,
                compression=blob.compression, columns=[{"name": c.name, "type": c.type} for c in columns],
                key=list(table.key), window_start=iso(window.start), window_end=iso(window.end),
                rows=int(stream.rows or 0), bytes=writer.bytes, sha256=writer.digest.hexdigest(),
                created_at=iso(datetime.now(UTC)) or "",
                source_clock=iso(bound.source_clock) if bound else None,
                oldest_xact_start=iso(bound.oldest_xact_start) if bound else None, content=content,
                extra={"uncompressed_bytes": writer.raw_bytes, **(extra or {}),
                       **({"chunk": chunk.as_json()} if chunk else {})})
            batch.write_manifest(store, keys.manifest, manifest)
            manifest_written = True
            crash("uploaded")
            self.ctx.control.mark_uploaded(run_id, where, writer.bytes, manifest.sha256, manifest.rows)
            if not batch.stored_matches(store, keys.data, manifest):
                raise BatchError(f"{table.name}: {where} in the store differs from what was written; "
                                 "check the object store")
            if in_load is not None:
                in_load(manifest)
            return manifest

        try:
            if table.is_api:
                # The records are staged as they arrive; bronze is locked only once the batch is complete.
                result = load_api(self._loader(), table, _api_stage(table, None, tee(), run_id), finalize,
                                  advance=advance, where=where)
            else:
                result = self._loader().load(table, [c.name for c in columns], tee(), finalize, advance=advance,
                                             where=where, chunk=chunk)
        except BaseException:
            if not manifest_written:
                area.delete_quietly(keys.data)  # the run is failed; its window is read again next time
            raise
        crash("committed")
        self._batch_loaded(table, run_id)
        area.move(keys, "processed", between=lambda: crash("moving"))
        self._loaded(outcome, run_id, result, area.display(area.moved_key(keys.data, "processed")), window)

    def _loaded(self, outcome: TableOutcome, run_id: int, result: LoadResult, path: str, window: Window) -> None:
        outcome.add(run_id, result, path)
        self.on_event(BatchLoaded(outcome.table, run_id, path, window.start, window.end, result.rows_extracted,
                                  result.rows_loaded, result.rows_skipped))

    def _report_progress(self, table: str, writer: BatchWriter) -> None:
        if self.on_progress is not None and writer.raw_bytes >= self._next_progress:
            self._next_progress = writer.raw_bytes + _PROGRESS_EVERY
            self.on_progress(table, writer.raw_bytes)

    def _loader(self) -> Loader:
        return Loader(self.ctx.load_conn, Control(self.ctx.load_conn, self.config.warehouse.control_schema,
                                                  self.config.project),
                      self.config.warehouse.bronze_schema, self.config.warehouse.lock_timeout)

    def _load(self, table: TableConfig, area: Area, manifest: Manifest, keys: BatchKeys, *, advance: bool,
              ) -> LoadResult:
        """Load a complete batch waiting in exports/ (a retry, or a replay)."""
        store = self.ctx.store
        where = area.display(keys.data)
        loader = self._loader()
        try:
            rows = batch.read_verified(store, keys.data, manifest)
            if manifest.content == "jsonl":
                stage = _api_stage(table, manifest.extra.get("endpoint"), rows, manifest.run_id)
                result = load_api(loader, table, stage, lambda: manifest, advance=advance, where=where)
            elif is_repair(manifest):
                result = load_repair(loader, table, manifest.column_names, rows, lambda: manifest, advance=advance,
                                     where=where)
            else:
                result = loader.load(table, manifest.column_names, rows, lambda: manifest, advance=advance,
                                     where=where, chunk=ChunkRef.from_json(manifest.extra.get("chunk")))
        except LoadRejected as exc:
            if batch.stored_matches(store, keys.data, manifest):
                # The file is intact: the warehouse refused its content. Keep it for a retry once fixed.
                self.ctx.control.mark_failed(manifest.run_id, self._safe(str(exc)))
                raise
            self._refuse(table, area, keys.manifest, keys.data, "its content does not match its manifest")
            raise BatchError(f"{table.name}: {where} does not match its manifest; moved to failed/ — the next "
                             "run re-extracts its window") from None
        except BatchError as exc:
            self._refuse(table, area, keys.manifest, keys.data, str(exc))
            raise BatchError(f"{exc}; moved to failed/ — the next run re-extracts its window") from None
        crash_point("committed")
        self._batch_loaded(table, manifest.run_id)
        area.move(keys, "processed", between=lambda: crash_point("moving"))
        return result

    def _batch_loaded(self, table: TableConfig, run_id: int) -> None:
        """After a batch's commit: a push source forgets the spooled pushes that went into it. (Database
        sources keep nothing for a batch, and are not opened for this.)"""
        if table.is_api:
            self.ctx.source(table.source).batch_loaded(table, run_id)

    def load_waiting(self, table: TableConfig, area: Area, keys: BatchKeys) -> tuple[Manifest, LoadResult]:
        """Load one complete batch that waits in exports/ and move it to processed/ (or to failed/ when it
        does not match its manifest): how `reconcile --repair` loads the batch it has just written."""
        manifest = area.read_manifest(keys.manifest)
        return manifest, self._load(table, area, manifest, keys, advance=False)

    def _refuse(self, table: TableConfig, area: Area, manifest_key: str, data_key: str | None, why: str) -> None:
        """Move a batch to failed/ and mark its run failed; the watermark stays."""
        try:
            run_id: int | None = area.read_manifest(manifest_key).run_id
        except BronzelineError:
            run_id = None
        self.on_event(BatchRefused(table.name, area.display(data_key or manifest_key), why))
        area.move(BatchKeys(data_key, manifest_key) if data_key else manifest_key, "failed")
        if run_id is not None:
            self.ctx.control.mark_failed(run_id, self._safe(f"batch refused: {why}"))


def _api_stage(table: TableConfig, endpoint: Any, chunks: Iterable[bytes], run_id: int) -> StageRows:
    """An API or push batch as its load's stage rows, mapped by the table's endpoint (else the one its
    manifest names)."""
    return StageRows(schema_for(table.endpoint or str(endpoint)), chunks, run_id)
