"""One count of what waits in exports/ (status, verify, the page and /metrics all use it)."""

from __future__ import annotations

from pathlib import Path

from bronzeline.batches.area import Area, PendingCount
from bronzeline.store.local import LocalStore


def test_complete_batches_and_incomplete_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert Area(store, "t").count() == PendingCount(0, 0)
    exports = tmp_path / "exports" / "t"
    exports.mkdir(parents=True)
    names = ["20260101_100000_EAT_1.csv.gz", "20260101_100000_EAT_1.manifest.json",  # a complete batch
             "20260101_110000_EAT_2.csv.gz",  # a data file whose manifest never came
             "20260101_120000_EAT_3.manifest.json",  # a manifest whose data file is gone
             ".20260101_130000_EAT_4.csv.gz.1a2b3c4d.part",  # a write in progress (or killed)
             "notes.txt"]  # a foreign file
    for name in names:
        (exports / name).write_bytes(b"x")
    found = Area(store, "t").count()
    assert (found.complete, found.incomplete, found.files) == (1, 4, 6)
    assert set(found.names) == set(names)
