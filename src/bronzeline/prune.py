"""`bronzeline prune`: apply `blob.retention` to the batch files kept as the audit trail.

- `processed/<table>/`: a batch is deleted once it is older than `processed_days`, counted from
  when its run was loaded, and only if the run ledger says its run is `loaded`.
- `failed/<table>/`: a refused batch is deleted once it is older than `failed_days`, counted from
  when its run failed, and only once its rows are in bronze through a later loaded run: the table's
  watermark has passed the end of its window (incremental), or a later snapshot is loaded.
- `exports/` is never touched: those batches are still to be loaded.

Anything else is kept, and said why: a run that is not in the ledger, a run that is not loaded,
files that are not batch files. A batch's data file goes first, its manifest second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bronzeline.batches.area import Area, Folder
from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.text import iso
from bronzeline.warehouse.control import RunRecord

Action = Literal["delete", "keep"]
# Why, as a value callers can test: `young` batches are simply not due yet (the CLI does not list them).
Reason = Literal["expired", "young", "not_in_ledger", "not_loaded", "not_failed", "window_not_reloaded",
                 "no_later_snapshot"]


@dataclass
class Item:
    folder: str
    table: str
    run_id: int
    files: list[str]
    bytes: int
    action: Action
    why: str
    reason: Reason


@dataclass
class PruneReport:
    dry_run: bool
    items: list[Item] = field(default_factory=list)

    @property
    def deleted(self) -> list[Item]:
        return [i for i in self.items if i.action == "delete"]

    @property
    def kept(self) -> list[Item]:
        return [i for i in self.items if i.action == "keep"]

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "deleted_files": sum(len(i.files) for i in self.deleted),
                "deleted_bytes": sum(i.bytes for i in self.deleted), "items": [asdict(i) for i in self.items]}


def prune(ctx: Context, *, dry_run: bool = False, now: datetime | None = None) -> PruneReport:
    """Delete (or, with dry_run, list) the batch files that `blob.retention` lets go."""
    now = now or datetime.now(UTC)
    retention = ctx.config.blob.retention
    report = PruneReport(dry_run)
    for table in ctx.config.tables:
        folders: tuple[tuple[Folder, int | None], ...] = (("processed", retention.processed_days),
                                                          ("failed", retention.failed_days))
        for folder, days in folders:
            if days is not None:
                report.items += _prune_folder(ctx, table, folder, now - timedelta(days=days), days, dry_run)
    return report


def _prune_folder(ctx: Context, table: TableConfig, folder: Folder, cutoff: datetime, days: int,
                  dry_run: bool) -> list[Item]:
    store = ctx.store
    files = Area(store, table.name).scan(folder).by_run()  # batch files only: foreign files are never touched
    if not files:
        return []
    control = ctx.control
    runs = control.runs_by_id(list(files))
    mark = control.watermark(table.name).last_extracted_at if table.mode == "incremental" else None
    last_loaded = None
    if folder == "failed" and table.mode == "snapshot":
        last = control.last_loaded_run(table.name)
        last_loaded = last.run_id if last else None
    items = []
    for run_id, keys in files.items():
        run = runs.get(run_id)
        action, reason, why = _decide(folder, run, cutoff, days, mark, last_loaded, run_id)
        size = sum(store.size(k) for k in keys)
        if action == "delete" and not dry_run:
            for key in keys:
                store.delete(key)
        items.append(Item(folder, table.name, run_id, [store.display(k) for k in keys], size, action, why, reason))
    return items


def _decide(folder: str, run: RunRecord | None, cutoff: datetime, days: int, mark: datetime | None,
            last_loaded: int | None, run_id: int) -> tuple[Action, Reason, str]:
    if run is None:
        return "keep", "not_in_ledger", f"run {run_id} is not in the run ledger"
    finished = run.run_finished_at
    if folder == "processed":
        if run.status != "loaded":
            return "keep", "not_loaded", f"run {run_id} is {run.status}, not loaded"
        if finished is None or finished > cutoff:
            return "keep", "young", f"loaded less than {days} day(s) ago"
        return "delete", "expired", f"run {run_id} loaded {iso(finished)}, more than {days} day(s) ago"
    if run.status != "failed":
        return "keep", "not_failed", f"run {run_id} is {run.status}"
    if finished is None or finished > cutoff:
        return "keep", "young", f"failed less than {days} day(s) ago"
    if run.mode == "incremental":
        end = run.window_end
        if end is None or mark is None or mark < end:
            why = f"its window has not been loaded since (the watermark is before {iso(end)})"
            return "keep", "window_not_reloaded", why
        return "delete", "expired", f"run {run_id} failed {iso(finished)}; its window has been loaded since"
    if last_loaded is None or last_loaded < run_id:
        return "keep", "no_later_snapshot", "no snapshot has been loaded since"
    return "delete", "expired", f"run {run_id} failed {iso(finished)}; snapshot run {last_loaded} loaded since"

