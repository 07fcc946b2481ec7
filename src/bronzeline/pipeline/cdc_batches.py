"""A page's change batch files (docs/cdc.md, "Each page"): one per table, in exports/<table>/, with its manifest
and run row — either change lines (sources/cdc/lines.py, applied by their net result per key in the warehouse)
or, for the rare page only the planner applies exactly, a planned file (store/change_batch.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bronzeline.batches.area import Area, BatchKeys
from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.faults import crash_point
from bronzeline.sources.cdc.changes import Change, Relation, TableLines, lsn_text
from bronzeline.sources.cdc.lines import LINE_META
from bronzeline.store import batch
from bronzeline.store.batch import Manifest, write_batch_file
from bronzeline.store.change_batch import META_COLUMNS, OLD_PREFIX, csv_chunks, plan_table
from bronzeline.text import iso
from bronzeline.warehouse.cdc_control import CdcControl
from bronzeline.warehouse.cdc_net import LAYOUT, LINE_TYPES

_PLAN_TYPES = ("text", "pg_lsn", "integer", "timestamp with time zone", "text", "integer", "text[]")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PageInfo:
    """What every file of a page records about the page (recovery applies the files of one page together)."""

    end_lsn: int
    last_commit_time: datetime | None
    tables: list[str]

    def extra(self) -> dict[str, Any]:
        return {"kind": "changes", "page_end_lsn": self.end_lsn, "page_tables": self.tables,
                "page_commit_time": iso(self.last_commit_time)}


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


class BatchFiles:
    """Writes the change batch files of one slot's pages."""

    def __init__(self, ctx: Context, slot_cdc: CdcControl) -> None:
        self.ctx = ctx
        self.cdc = slot_cdc

    def lines(self, table: TableConfig, lines: TableLines, types: dict[str, str], added: list[tuple[str, str]],
              skip: int, page: PageInfo) -> tuple[TableConfig, BatchKeys, Manifest]:
        names = [c.name for c in lines.relation.columns]
        meta = list(zip(LINE_META, LINE_TYPES, strict=True))
        first = lines.txns[0][0] if lines.txns else None
        last = lines.txns[-1][0] if lines.txns else None
        extra = {**page.extra(), "layout": LAYOUT, "last_commit_time": iso(lines.last_commit_time),
                 "skip_through": skip, "skipped": lines.skipped(skip), "truncate": lines.truncate,
                 "moved": lines.moved, "unchanged": sorted(lines.unchanged), "add_columns": [list(a) for a in added],
                 "lsn_start": lsn_text(first) if first else None, "lsn_end": lsn_text(last) if last else None}
        return self._store(table, _file_chunks(lines.path), meta, names, {**types, **dict(added)}, lines.rows, extra,
                           first, last)

    def planned(self, table: TableConfig, changes: list[Change], relation: Relation | None, types: dict[str, str],
                added: list[tuple[str, str]], skip: int, page: PageInfo) -> tuple[TableConfig, BatchKeys, Manifest]:
        """The planner's file (store/change_batch.py): for a page the net result in SQL cannot do exactly."""
        names = [c.name for c in relation.columns] if relation is not None else list(types)
        plan = plan_table(changes, names, list(table.key), skip)
        last_time = max((c.commit_time for c in changes), default=None)
        extra = {**page.extra(), "last_commit_time": iso(last_time),
                 "levels": {str(k): v for k, v in plan.levels.items()},
                 "truncate": any(p.apply == "T" for p in plan.rows), "skipped": plan.skipped,
                 "partial": any(p.apply in ("U", "K") and p.unchanged for p in plan.rows),
                 "add_columns": [list(a) for a in added],
                 "lsn_start": lsn_text(plan.first_lsn) if plan.first_lsn else None,
                 "lsn_end": lsn_text(plan.last_lsn) if plan.last_lsn else None}
        meta = list(zip(META_COLUMNS, _PLAN_TYPES, strict=True))
        return self._store(table, csv_chunks(plan), meta, names, {**types, **dict(added)}, len(plan.rows), extra,
                           plan.first_lsn, plan.last_lsn)

    def _store(self, table: TableConfig, chunks: Iterable[bytes], meta: list[tuple[str, str]], names: list[str],
               types: dict[str, str], rows: int, extra: dict[str, Any], first_lsn: int | None, last_lsn: int | None
               ) -> tuple[TableConfig, BatchKeys, Manifest]:
        ctx, blob = self.ctx, self.ctx.config.blob
        control = ctx.control
        run_id = control.start_run(table.name, "cdc", None, None, None, None, None)
        area = Area(ctx.store, table.name)
        keys = area.new_batch(run_id, datetime.now(UTC), ctx.config.tz, blob.compression)
        writer = write_batch_file(ctx.store, keys.data, chunks, blob.compression, blob.compression_level)
        columns = [{"name": n, "type": t} for n, t in meta]
        columns += [{"name": n, "type": types[n]} for n in names]
        columns += [{"name": OLD_PREFIX + k, "type": types[k]} for k in table.key]
        manifest = Manifest(
            run_id=run_id, table=table.name, mode="cdc", data_file=keys.data_name, compression=blob.compression,
            columns=columns, key=list(table.key), window_start=None, window_end=None, rows=rows,
            bytes=writer.bytes, sha256=writer.digest.hexdigest(), created_at=iso(datetime.now(UTC)) or "", extra=extra)
        batch.write_manifest(ctx.store, keys.manifest, manifest)
        crash_point("uploaded")
        control.mark_uploaded(run_id, area.display(keys.data), writer.bytes, manifest.sha256, manifest.rows)
        self.cdc.note_run(run_id, first_lsn, last_lsn, None)
        return table, keys, manifest
