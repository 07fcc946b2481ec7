"""What waits in exports/<table>/, counted one way for `status`, `verify`, the page and /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from bronzeline.store import batch
from bronzeline.store.base import ObjectStore


@dataclass(frozen=True)
class PendingCount:
    """`complete`: batches with both their data file and manifest (the next run loads them).
    `incomplete`: every other file — a data file without its manifest (a write that did not finish,
    which the next run deletes), a manifest without its data file, a temporary file, a foreign file."""

    complete: int
    incomplete: int
    names: tuple[str, ...] = ()  # every file name in exports/<table>/, sorted

    @property
    def files(self) -> int:
        return len(self.names)


def pending_batches(store: ObjectStore, table: str) -> PendingCount:
    names = tuple(key.rsplit("/", 1)[-1] for key in store.list(batch.exports_dir(table)))
    parts: dict[str, set[bool]] = {}  # stem -> {is manifest}
    for name in names:
        stem = batch.stem_of(name)
        if stem is not None:
            parts.setdefault(stem, set()).add(name.endswith(batch.MANIFEST_SUFFIX))
    complete = sum(1 for kinds in parts.values() if kinds == {True, False})
    # a complete batch is two files; everything else in the folder is incomplete
    return PendingCount(complete=complete, incomplete=len(names) - 2 * complete, names=names)
