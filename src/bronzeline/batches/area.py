"""The one owner of a table's batch area: `exports/` (waiting), `processed/` (loaded), `failed/`
(refused). Names, what is pending, what a crashed run left behind, and every move between folders go
through here, so the runner, `status`, `verify` and `prune` agree on what they see.

A batch is a data file and its manifest with one stem (`<YYYYMMDD_HHMMSS>_<TZ>_<run_id>`). The data
file is written first (under a temporary `.<name>.<id>.part` name by the store, renamed when
complete), the manifest last: a data file without a manifest is an incomplete batch; a manifest
without its data file is a move that stopped half-way or a batch that lost its data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from bronzeline.store import batch
from bronzeline.store.base import ObjectStore, is_temp

Folder = Literal["exports", "processed", "failed"]


@dataclass(frozen=True)
class BatchKeys:
    data: str
    manifest: str

    @property
    def data_name(self) -> str:
        return self.data.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Batch:
    """A complete batch (data file and manifest) in one folder."""

    run_id: int
    keys: BatchKeys


@dataclass
class AreaScan:
    """What one listing of a folder holds."""

    complete: list[Batch] = field(default_factory=list)  # oldest run first
    incomplete: list[str] = field(default_factory=list)  # data files whose manifest never came
    lone_manifests: list[str] = field(default_factory=list)  # manifests whose data file is not beside them
    temporary: list[str] = field(default_factory=list)  # uploads that never finished
    foreign: list[str] = field(default_factory=list)  # files that are not batch files (never touched)
    names: tuple[str, ...] = ()  # every file name in the folder, sorted

    def by_run(self) -> dict[int, list[str]]:
        """Every batch file by run id, oldest run first, data files before manifests (so a deletion
        stopped half-way leaves a manifest, never a bare data file)."""
        found: dict[int, list[str]] = {b.run_id: [b.keys.data, b.keys.manifest] for b in self.complete}
        for key in self.incomplete + self.lone_manifests:
            stem = batch.stem_of(key)
            assert stem is not None  # scan() put only batch files there
            found.setdefault(batch.run_id_of(stem), []).append(key)
        return {run: sorted(keys, key=lambda k: k.endswith(batch.MANIFEST_SUFFIX))
                for run, keys in sorted(found.items())}


@dataclass(frozen=True)
class PendingCount:
    """`complete`: batches with both their data file and manifest (the next run loads them).
    `incomplete`: every other file — a data file without its manifest (a write that did not finish,
    which the next run deletes), a manifest without its data file, a temporary file, a foreign file.
    `status`, `verify`, the page and /metrics all count with this one function."""

    complete: int
    incomplete: int
    names: tuple[str, ...] = ()

    @property
    def files(self) -> int:
        return len(self.names)


class Area:
    def __init__(self, store: ObjectStore, table: str) -> None:
        self.store = store
        self.table = table

    def folder(self, which: Folder) -> str:
        return {"exports": batch.exports_dir, "processed": batch.processed_dir,
                "failed": batch.failed_dir}[which](self.table)

    def new_batch(self, run_id: int, at: datetime, tz: ZoneInfo, compression: str, content: str = "csv",
                  ) -> BatchKeys:
        """Keys for a new batch in exports/."""
        stem = batch.batch_stem(run_id, at, tz)
        exports = self.folder("exports")
        return BatchKeys(f"{exports}/{batch.data_name(stem, compression, content)}",
                         f"{exports}/{stem}{batch.MANIFEST_SUFFIX}")

    def scan(self, which: Folder = "exports") -> AreaScan:
        keys = self.store.list(self.folder(which))
        stems: dict[str, list[str]] = {}
        found = AreaScan(names=tuple(sorted(k.rsplit("/", 1)[-1] for k in keys)))
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            if is_temp(name):
                found.temporary.append(key)
                continue
            stem = batch.stem_of(name)
            if stem is None:
                found.foreign.append(key)
            else:
                stems.setdefault(stem, []).append(key)
        for stem, files in sorted(stems.items(), key=lambda kv: batch.run_id_of(kv[0])):
            manifests = [k for k in files if k.endswith(batch.MANIFEST_SUFFIX)]
            data = [k for k in files if not k.endswith(batch.MANIFEST_SUFFIX)]
            if manifests and data:
                found.complete.append(Batch(batch.run_id_of(stem), BatchKeys(data[0], manifests[0])))
            elif data:
                found.incomplete += data
            else:
                found.lone_manifests += manifests
        return found

    def count(self) -> PendingCount:
        """What waits in exports/: complete batches, and every other file."""
        found = self.scan("exports")
        return PendingCount(len(found.complete), len(found.names) - 2 * len(found.complete), found.names)

    def pending(self) -> list[Batch]:
        """Complete batches waiting in exports/, oldest run first."""
        return self.scan("exports").complete

    def display(self, key: str) -> str:
        return self.store.display(key)

    def read_manifest(self, key: str) -> batch.Manifest:
        return batch.read_manifest(self.store, key)

    def moved_key(self, key: str, to: Folder) -> str:
        return f"{self.folder(to)}/{key.rsplit('/', 1)[-1]}"

    def move(self, keys: BatchKeys | str, to: Folder, *, between: Callable[[], None] | None = None) -> None:
        """Move the data file, then its manifest (a rename, or copy-verify-delete on object stores).
        A crash in between leaves a manifest whose data file is already in `to`; the next run's
        leftover cleanup completes the move. `between` is called between the two files (crash tests)."""
        data, manifest = (keys.data, keys.manifest) if isinstance(keys, BatchKeys) else (None, keys)
        if data is not None:
            self.store.move(data, self.moved_key(data, to))
            if between is not None:
                between()
        self.store.move(manifest, self.moved_key(manifest, to))

    def data_moved_to(self, manifest: batch.Manifest, to: Folder) -> bool:
        return self.store.exists(f"{self.folder(to)}/{manifest.data_file}")

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def delete_quietly(self, key: str) -> None:
        """Remove a file a failed run was writing; a failure here is left to the next run's cleanup."""
        try:
            if self.store.exists(key):
                self.store.delete(key)
        except Exception:
            pass
