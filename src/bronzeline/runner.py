"""One table's run: lock -> pending files -> window -> extract -> store -> load -> move (DESIGN.md §1).

The only module that knows the source, the object store and the warehouse together.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import psycopg

from bronzeline.config.models import Config, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BatchError, BronzelineError, LockBusy, SourceError, WarehouseError, detached
from bronzeline.faults import crash_point
from bronzeline.redact import redact
from bronzeline.sources.base import Bound, Column, Window
from bronzeline.store import batch
from bronzeline.store.batch import BatchWriter, Manifest
from bronzeline.warehouse import ddl, migrations
from bronzeline.warehouse.control import Control
from bronzeline.warehouse.loader import Loader, LoadRejected, LoadResult

Event = Callable[[str, str], None]  # (table, message)
Progress = Callable[[str, int], None]  # (table, bytes written so far)
_PROGRESS_EVERY = 8 << 20


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
    error: BaseException | None = None  # why it failed, for retry.classify
    attempts: int = 1  # how many attempts retry.Retrier made

    def add(self, run_id: int, result: LoadResult, path: str) -> None:
        self.runs.append(run_id)
        self.rows_extracted += result.rows_extracted
        self.rows_loaded += result.rows_loaded
        self.rows_skipped += result.rows_skipped
        self.rows_deleted += result.rows_deleted or 0
        self.files.append(path)


class Runner:
    def __init__(self, ctx: Context, on_event: Event | None = None, on_progress: Progress | None = None,
                 debug: bool = False) -> None:
        self.ctx = ctx
        self.config: Config = ctx.config
        self.on_event = on_event or (lambda table, msg: None)
        self.on_progress = on_progress
        self.debug = debug
        self.attempt = 1  # set by retry.Retrier; recorded in the run row
        self._next_progress = _PROGRESS_EVERY

    # ---------------------------------------------------------------- public
    def run(self, names: list[str] | None = None,
            run_table: Callable[[TableConfig], TableOutcome] | None = None) -> list[TableOutcome]:
        """Each table once; `run_table` (e.g. retry.Retrier.run_table) replaces self.run_table."""
        tables = [self.config.table(n) for n in names] if names else list(self.config.tables)
        migrations.require_current(self.ctx.warehouse, self.config.warehouse.control_schema)
        return [(run_table or self.run_table)(t) for t in tables]

    def run_table(self, table: TableConfig, window: Window | None = None) -> TableOutcome:
        """One run of `table`. With `window`, run exactly that window and leave the watermark."""
        started = time.monotonic()
        outcome = TableOutcome(table.name, "loaded")
        control = self.ctx.control
        try:
            if not control.try_lock(table.name):
                raise LockBusy(f"{table.name}: another run holds this table's lock; skipped")
        except LockBusy as exc:
            outcome.status, outcome.message = "skipped", str(exc)
            return outcome
        try:
            self._clean_leftovers(table)
            self._load_pending(table, outcome)
            self._extract_and_load(table, outcome, window)
        except BronzelineError as exc:
            outcome.status, outcome.message, outcome.error = "failed", self._safe(str(exc)), detached(exc)
            self._fail_run(outcome.current_run, outcome.message)
        except psycopg.Error as exc:
            outcome.status, outcome.error = "failed", detached(exc)
            outcome.message = self._safe(f"{table.name}: database error: {str(exc).strip()}")
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
            self._unlock(table)
            outcome.seconds = time.monotonic() - started
        return outcome

    # ---------------------------------------------------------------- steps
    def _safe(self, text: str) -> str:
        return redact(text, self.config.secrets())

    def _unlock(self, table: TableConfig) -> None:
        try:
            self.ctx.control.unlock(table.name)
        except (psycopg.Error, BronzelineError):
            pass  # the connection is gone, and with it the lock (WarehouseError: it cannot be reopened)

    def _fail_run(self, run_id: int | None, message: str) -> None:
        if run_id is None:
            return
        try:
            self.ctx.control.mark_failed(run_id, message)
        except (psycopg.Error, BronzelineError):
            pass  # the warehouse is gone; the next run marks this run failed (no file, or its file retried)

    def _clean_leftovers(self, table: TableConfig) -> None:
        """Delete data files whose manifest never came (the writer died); fail runs with no file."""
        store = self.ctx.store
        prefix = batch.exports_dir(table.name)
        keys = store.list(prefix)
        stems: dict[str, set[str]] = {}
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            if name.startswith(".") and name.endswith(".part"):
                store.delete(key)
                continue
            stem = batch.stem_of(name)
            if stem is not None:
                stems.setdefault(stem, set()).add(key)
        alive: set[int] = set()
        for stem, files in stems.items():
            manifests = [k for k in files if k.endswith(batch.MANIFEST_SUFFIX)]
            data = [k for k in files if not k.endswith(batch.MANIFEST_SUFFIX)]
            if not manifests:
                for key in data:
                    self.on_event(table.name, f"deleting {key}: its manifest was never written")
                    store.delete(key)
            elif not data:
                self._finish_or_refuse(table, manifests[0])
            else:
                alive.add(batch.run_id_of(stem))
        dead = [r for r in self.ctx.control.unfinished_runs(table.name) if r not in alive]
        self.ctx.control.fail_runs(dead, "the run stopped before its batch file was complete; "
                                         "the next run re-extracts its window")

    def _finish_or_refuse(self, table: TableConfig, manifest_key: str) -> None:
        """A manifest alone in exports/: a move that stopped between its two files (complete it),
        or a batch whose data file is gone (refuse it)."""
        store = self.ctx.store
        manifest = batch.read_manifest(store, manifest_key)
        moved = f"{batch.processed_dir(table.name)}/{manifest.data_file}"
        if self.ctx.control.run_status(manifest.run_id) == "loaded" and store.exists(moved):
            self._move(table, manifest_key, None, batch.processed_dir(table.name))
        else:
            self._refuse(table, manifest_key, None, "its data file is missing")

    def _pending(self, table: TableConfig) -> list[tuple[str, str]]:
        """(manifest key, data key) of complete batches waiting in exports/, oldest run first."""
        keys = self.ctx.store.list(batch.exports_dir(table.name))
        found = []
        for key in keys:
            if key.endswith(batch.MANIFEST_SUFFIX):
                stem = batch.stem_of(key)
                data = [k for k in keys if batch.stem_of(k) == stem and k != key]
                if stem and data:
                    found.append((batch.run_id_of(stem), key, data[0]))
        return [(m, d) for _, m, d in sorted(found)]

    def _load_pending(self, table: TableConfig, outcome: TableOutcome) -> None:
        for manifest_key, data_key in self._pending(table):
            manifest = batch.read_manifest(self.ctx.store, manifest_key)
            status = self.ctx.control.run_status(manifest.run_id)
            if status == "loaded":
                self._move(table, manifest_key, data_key, batch.processed_dir(table.name))
                continue
            if status is None:
                self._refuse(table, manifest_key, data_key, f"run {manifest.run_id} is not in the run ledger")
                raise BatchError(f"{table.name}: batch {data_key} belongs to no known run; moved to failed/")
            self.on_event(table.name, f"loading pending batch {data_key}")
            result = self._load(table, manifest, manifest_key, data_key, advance=True)
            outcome.add(manifest.run_id, result, self.ctx.store.display(data_key))

    def _extract_and_load(self, table: TableConfig, outcome: TableOutcome, window: Window | None) -> None:
        source = self.ctx.source(table.source)
        columns = source.describe(table)
        self._check_bronze(table, columns)
        problems = source.check(table, columns)
        if problems:
            raise SourceError("; ".join(problems))
        control = self.ctx.control
        bound: Bound | None = None
        advance = window is None
        if table.mode == "incremental":
            bound = source.upper_bound(table)
            if window is None:
                mark = control.watermark(table.name).last_extracted_at
                start = mark - table.lookback_interval if (mark and table.lookback_interval) else mark
                window = Window(start, bound.upper)
                if mark is not None and bound.upper <= mark:
                    outcome.window = window
                    why = f" (held back by {bound.holder})" if bound.holder else ""
                    self.on_event(table.name, f"no new window: the safe bound {bound.upper} is not past the "
                                              f"watermark{why}")
                    return
            elif window.end is None or window.end > bound.upper:
                window = Window(window.start, bound.upper)
            if bound.holder:
                self.on_event(table.name, f"bound held back {bound.holdback.total_seconds():.1f}s by {bound.holder}")
        else:
            window = Window(None, None)
        outcome.window = window
        run_id = control.start_run(
            table.name, table.mode, window.start, window.end,
            bound.source_clock if bound else None, bound.oldest_xact_start if bound else None,
            bound.holdback.total_seconds() if bound else None, attempts=self.attempt)
        outcome.current_run = run_id  # from here on, a failure marks this run failed
        self._extract_and_load_batch(table, columns, window, bound, run_id, advance, outcome)
        outcome.current_run = None

    def _check_bronze(self, table: TableConfig, columns: list[Column]) -> None:
        schema = self.config.warehouse.bronze_schema
        bronze = ddl.bronze_columns(self.ctx.warehouse, schema, table.name)
        if bronze is None:
            raise WarehouseError(f"{table.name}: {schema}.{table.name} does not exist; run `bronzeline migrate`")
        diffs = ddl.column_differences(columns, bronze)
        if diffs:
            raise WarehouseError(f"{table.name}: the source and bronze differ: {'; '.join(diffs)}. Run "
                                 "`bronzeline drift`, then change bronze (or set schema_evolution: add_columns "
                                 "and run `bronzeline migrate`)")

    def _extract_and_load_batch(self, table: TableConfig, columns: list[Column], window: Window,
                                bound: Bound | None, run_id: int, advance: bool, outcome: TableOutcome) -> str:
        """Stream the source into the batch file and into the warehouse at once; the warehouse commits
        only after the file and its manifest are complete and verified in the store."""
        store = self.ctx.store
        blob = self.config.blob
        stem = batch.batch_stem(run_id, datetime.now(UTC), self.config.tz)
        data_key = f"{batch.exports_dir(table.name)}/{batch.data_name(stem, blob.compression)}"
        manifest_key = f"{batch.exports_dir(table.name)}/{stem}{batch.MANIFEST_SUFFIX}"
        self.on_event(table.name, f"extracting {_window_text(window)} into {store.display(data_key)}")
        stream = self.ctx.source(table.source).extract(table, columns, window)
        written: list[BatchWriter] = []

        def tee() -> Iterator[bytes]:
            with store.open_write(data_key) as handle:
                writer = BatchWriter(handle, blob.compression, blob.compression_level)
                try:
                    for chunk in stream:
                        writer.write(chunk)
                        crash_point("extract")
                        self._report_progress(table.name, writer)
                        yield chunk
                    writer.finish()
                finally:
                    writer.close()
            written.append(writer)

        def finalize() -> Manifest:
            writer = written[0]
            manifest = Manifest(
                run_id=run_id, table=table.name, mode=table.mode, data_file=data_key.rsplit("/", 1)[-1],
                compression=blob.compression, columns=[{"name": c.name, "type": c.type} for c in columns],
                key=list(table.key), window_start=_iso(window.start), window_end=_iso(window.end),
                rows=int(stream.rows or 0), bytes=writer.bytes, sha256=writer.digest.hexdigest(),
                created_at=_iso(datetime.now(UTC)) or "",
                source_clock=_iso(bound.source_clock) if bound else None,
                oldest_xact_start=_iso(bound.oldest_xact_start) if bound else None,
                extra={"uncompressed_bytes": writer.raw_bytes})
            batch.write_manifest(store, manifest_key, manifest)
            crash_point("uploaded")
            self.ctx.control.mark_uploaded(run_id, store.display(data_key), writer.bytes, manifest.sha256,
                                           manifest.rows)
            if not batch.stored_matches(store, data_key, manifest):
                raise BatchError(f"{store.display(data_key)} in the store differs from what was written; "
                                 "check the object store")
            return manifest

        result = self._loader().load(table, [c.name for c in columns], tee(), finalize, advance=advance,
                                     where=store.display(data_key))
        crash_point("committed")
        self._move(table, manifest_key, data_key, batch.processed_dir(table.name))
        outcome.add(run_id, result, store.display(f"{batch.processed_dir(table.name)}/{data_key.rsplit('/', 1)[-1]}"))
        return data_key

    def _report_progress(self, table: str, writer: BatchWriter) -> None:
        if self.on_progress is not None and writer.raw_bytes >= self._next_progress:
            self._next_progress = writer.raw_bytes + _PROGRESS_EVERY
            self.on_progress(table, writer.raw_bytes)

    def _loader(self) -> Loader:
        return Loader(self.ctx.load_conn, Control(self.ctx.load_conn, self.config.warehouse.control_schema,
                                                  self.config.project),
                      self.config.warehouse.bronze_schema, self.config.warehouse.lock_timeout)

    def _load(self, table: TableConfig, manifest: Manifest, manifest_key: str, data_key: str,
              *, advance: bool) -> LoadResult:
        """Load a complete batch waiting in exports/ (a retry, or a replay)."""
        store = self.ctx.store
        where = store.display(data_key)
        try:
            result = self._loader().load(table, manifest.column_names, batch.read_verified(store, data_key, manifest),
                                         lambda: manifest, advance=advance, where=where)
        except LoadRejected as exc:
            if batch.stored_matches(store, data_key, manifest):
                # The file is intact: the warehouse refused its content. Keep it for a retry once fixed.
                self.ctx.control.mark_failed(manifest.run_id, self._safe(str(exc)))
                raise
            self._refuse(table, manifest_key, data_key, "its content does not match its manifest")
            raise BatchError(f"{where} does not match its manifest; moved to failed/ — the next run "
                             "re-extracts its window") from None
        except BatchError as exc:
            self._refuse(table, manifest_key, data_key, str(exc))
            raise BatchError(f"{exc}; moved to failed/ — the next run re-extracts its window") from None
        crash_point("committed")
        self._move(table, manifest_key, data_key, batch.processed_dir(table.name))
        return result

    def _refuse(self, table: TableConfig, manifest_key: str, data_key: str | None, why: str) -> None:
        """Move a batch to failed/ and mark its run failed; the watermark stays."""
        try:
            run_id: int | None = batch.read_manifest(self.ctx.store, manifest_key).run_id
        except BronzelineError:
            run_id = None
        self.on_event(table.name, f"refusing {data_key or manifest_key}: {why}")
        self._move(table, manifest_key, data_key, batch.failed_dir(table.name))
        if run_id is not None:
            self.ctx.control.mark_failed(run_id, self._safe(f"batch refused: {why}"))

    def _move(self, table: TableConfig, manifest_key: str, data_key: str | None, folder: str) -> None:
        """Move the data file, then its manifest (each a rename, or copy-verify-delete on object
        stores). A crash in between leaves a manifest whose data is already in `folder`; the next
        run completes the move (see _clean_leftovers)."""
        store = self.ctx.store
        for i, key in enumerate(k for k in (data_key, manifest_key) if k):
            if i:
                crash_point("moving")
            store.move(key, f"{folder}/{key.rsplit('/', 1)[-1]}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _window_text(window: Window) -> str:
    if window.end is None:
        return "a full snapshot"
    start = window.start.isoformat() if window.start else "-infinity"
    return f"({start}, {window.end.isoformat()}]"


def parse_timestamp(text: str, config: Config) -> datetime:
    """ISO-8601; without an offset it is in the config's time zone."""
    try:
        value = datetime.fromisoformat(text.strip())  # accepts "T" or a space between date and time
    except ValueError:
        raise BronzelineError(f"{text!r} is not an ISO-8601 timestamp; write e.g. 2026-11-01T00:00:00+03:00") from None
    return value if value.tzinfo else value.replace(tzinfo=config.tz)


def backfill(runner: Runner, name: str, since: datetime, until: datetime | None) -> TableOutcome | None:
    """Move the watermark back to `since` (the next run re-reads); with `until`, run (since, until] now
    and leave the watermark where it is."""
    table = runner.config.table(name)
    if table.mode != "incremental":
        raise BronzelineError(f"{name} is a snapshot table: every run reloads it whole; use `bronzeline run {name}`")
    if until is not None:
        if until <= since:
            raise BronzelineError("--until must be later than --since")
        return runner.run_table(table, window=Window(since, until))
    _with_lock(runner, name, lambda: runner.ctx.control.set_watermark(name, since))
    return None


def reseed(runner: Runner, name: str) -> TableOutcome:
    """Back-fill all history: forget the watermark and run the table now."""
    table = runner.config.table(name)
    if table.mode == "incremental":
        _with_lock(runner, name, lambda: runner.ctx.control.set_watermark(name, None))
    return runner.run_table(table)


def _with_lock(runner: Runner, name: str, action: Callable[[], None]) -> None:
    control = runner.ctx.control
    if not control.try_lock(name):
        raise LockBusy(f"{name}: a run holds this table's lock; try again when it has finished")
    try:
        action()
    finally:
        control.unlock(name)
