"""The two object stores' shared rules, on the local one: one temporary-file scheme, always cleaned;
moves that never lose a file; an s3:// URL without the 's3' extra is one clear error."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from bronzeline.config.models import BlobConfig
from bronzeline.errors import StoreError
from bronzeline.extras import MissingExtra
from bronzeline.store import LocalStore, open_store
from bronzeline.store import local as local_module
from bronzeline.store.base import is_temp, temp_name


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_temporary_names_are_one_recognisable_scheme() -> None:
    name = temp_name("20240101_000000_EAT_1.csv.gz")
    assert name.startswith(".20240101_000000_EAT_1.csv.gz.") and name.endswith(".part")
    assert is_temp(name) and is_temp(f"exports/t/{name}")
    assert temp_name("a") != temp_name("a")
    assert not is_temp("20240101_000000_EAT_1.csv.gz") and not is_temp(".hidden")


def test_a_copy_writes_under_the_scheme_and_cleans_up_when_it_fails(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    with store.open_write("exports/t/a.csv") as handle:
        handle.write(b"abc" * 1000)
    seen: list[str] = []

    def failing_fsync(fd: int) -> None:
        seen.extend(os.listdir(tmp_path / "processed" / "t"))
        raise OSError(errno.EIO, "input/output error")

    monkeypatch.setattr(local_module.os, "fsync", failing_fsync)
    with pytest.raises(StoreError) as failed:
        store.copy("exports/t/a.csv", "processed/t/a.csv")
    assert "copying to" in str(failed.value) and isinstance(failed.value.__cause__, OSError)
    assert len(seen) == 1 and is_temp(seen[0])  # the copy was written under the one scheme...
    assert files_under(tmp_path) == ["exports/t/a.csv"]  # ...and removed when it failed


def test_a_move_across_file_systems_copies_verifies_and_deletes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    with store.open_write("exports/t/a.csv") as handle:
        handle.write(b"row\n" * 5000)
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(str(src))
        if len(calls) == 1:  # the rename of the move itself: another file system
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(local_module.os, "replace", replace)
    store.move("exports/t/a.csv", "processed/t/a.csv")
    assert files_under(tmp_path) == ["processed/t/a.csv"]
    assert (tmp_path / "processed/t/a.csv").read_bytes() == b"row\n" * 5000
    assert len(calls) == 2 and is_temp(calls[1])


def test_a_failed_move_keeps_the_original(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(StoreError, match="moving"):
        store.move("exports/t/missing.csv", "processed/t/missing.csv")
    with store.open_write("exports/t/a.csv") as handle:
        handle.write(b"x")
    (tmp_path / "failed").write_text("a file where the folder should be")
    with pytest.raises(StoreError):
        store.move("exports/t/a.csv", "failed/t/a.csv")
    assert (tmp_path / "exports/t/a.csv").read_bytes() == b"x"


def test_listing_shows_leftover_temporary_files_so_a_run_can_remove_them(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    leftover = tmp_path / "exports" / "t" / temp_name("a.csv.gz")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")  # as a killed process leaves it
    [key] = store.list("exports/t")
    assert is_temp(key)
    store.delete(key)
    assert store.list("exports/t") == []


def test_an_s3_url_without_the_s3_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if not installed
    with pytest.raises(MissingExtra) as missing:
        open_store(BlobConfig(url="s3://bucket/prefix"), Path("."), "p")
    assert str(missing.value) == 'an s3:// blob.url needs the \'s3\' extra: pip install "bronzeline[s3]"'
