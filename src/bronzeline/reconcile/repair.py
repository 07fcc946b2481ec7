"""`reconcile --repair`: the differences become one ordinary batch — a data file and its manifest in
exports/, a run row in the ledger — loaded by the pipeline's own path for waiting batches (checksum
verified, one warehouse transaction, moved to processed/; refused to failed/ if it does not match).
warehouse/repair_load.py says what the batch's lines mean and how the run row accounts for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from bronzeline.batches.area import Area
from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.pipeline.table_run import TableRun
from bronzeline.reconcile.report import RepairResult
from bronzeline.sources.base import Column, Key, KeyRanges
from bronzeline.store import batch
from bronzeline.store.batch import Manifest, write_batch_file
from bronzeline.text import iso
from bronzeline.warehouse.repair_load import OP_COLUMN, REPAIR_MODE

CHUNK_BYTES = 1 << 20


def _field(value: str | None) -> str:
    """A CSV field as COPY reads it back: NULL unquoted and empty, any text quoted (so '' stays '')."""
    return "" if value is None else '"' + value.replace('"', '""') + '"'


class Lines:
    """The batch's CSV lines: `u` + each row the source has for the upsert keys, then `d` + each key to
    delete (its key columns filled, the others NULL). Counts what it wrote."""

    def __init__(self, table: TableConfig, columns: list[Column], source: KeyRanges, upserts: Sequence[Key],
                 deletes: Sequence[Key]) -> None:
        self.source = source
        self.upserts = upserts
        self.deletes = deletes
        self.width = len(columns)
        self.key_at = [next(i for i, c in enumerate(columns) if c.name == k) for k in table.key]
        self.rows_upserted = 0
        self.rows_deleted = 0

    def _lines(self) -> Iterator[str]:
        for row in self.source.rows(self.upserts):
            self.rows_upserted += 1
            yield "u," + ",".join(map(_field, row)) + "\n"
        for key in self.deletes:
            fields: list[str | None] = [None] * self.width
            for at, value in zip(self.key_at, key, strict=True):
                fields[at] = value
            self.rows_deleted += 1
            yield "d," + ",".join(map(_field, fields)) + "\n"

    def __iter__(self) -> Iterator[bytes]:
        buf: list[str] = []
        size = 0
        for line in self._lines():
            buf.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                yield "".join(buf).encode()
                buf, size = [], 0
        if buf:
            yield "".join(buf).encode()


def repair(ctx: Context, table: TableConfig, columns: list[Column], source: KeyRanges, upserts: Sequence[Key],
           deletes: Sequence[Key], watermark: datetime | None) -> RepairResult:
    """Write the batch, record it, load it. The caller holds the table's lock."""
    config = ctx.config
    store, blob, control = ctx.store, config.blob, ctx.control
    area = Area(store, table.name)
    run_id = control.start_run(table.name, REPAIR_MODE, None, watermark, None, None, None)
    keys = area.new_batch(run_id, datetime.now(UTC), config.tz, blob.compression)
    lines = Lines(table, columns, source, upserts, deletes)
    try:
        writer = write_batch_file(store, keys.data, lines, blob.compression, blob.compression_level)
        manifest = Manifest(
            run_id=run_id, table=table.name, mode=REPAIR_MODE, data_file=keys.data_name,
            compression=blob.compression,
            columns=[{"name": OP_COLUMN, "type": "text"}] + [{"name": c.name, "type": c.type} for c in columns],
            key=list(table.key), window_start=None, window_end=iso(watermark),
            rows=lines.rows_upserted + lines.rows_deleted, bytes=writer.bytes, sha256=writer.digest.hexdigest(),
            created_at=iso(datetime.now(UTC)) or "",
            extra={"uncompressed_bytes": writer.raw_bytes, "upserts": lines.rows_upserted,
                   "deletes": lines.rows_deleted})
        batch.write_manifest(store, keys.manifest, manifest)
    except BaseException as exc:
        area.delete_quietly(keys.data)  # no manifest yet: nothing of this batch may stay behind
        if isinstance(exc, BronzelineError | OSError):
            control.mark_failed(run_id, f"{table.name}: writing the repair batch failed: {exc}")
        raise
    control.mark_uploaded(run_id, area.display(keys.data), writer.bytes, manifest.sha256, lines.rows_upserted)
    # From here the batch is an ordinary waiting batch: if this load fails, the next run loads it.
    _, result = TableRun(ctx).load_waiting(table, area, keys)
    return RepairResult(run_id, area.display(area.moved_key(keys.data, "processed")), result.rows_extracted,
                        result.rows_loaded, result.rows_skipped, result.rows_deleted or 0)
