"""Batch files and manifests (docs/design.md) on a local directory store: names, round trips, verification,
atomic writes and listing."""

from __future__ import annotations

import gzip
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bronzeline.errors import BatchError, StoreError
from bronzeline.store import LocalStore
from bronzeline.store.batch import (
    MANIFEST_SUFFIX,
    BatchWriter,
    Manifest,
    batch_stem,
    data_name,
    read_manifest,
    read_verified,
    run_id_of,
    stem_of,
    write_manifest,
)

NAIROBI = ZoneInfo("Africa/Nairobi")
# CSV as COPY writes it, with the awkward bits: quotes, newlines inside quotes, NULL vs "".
ROWS = b'1,"a ""quoted"", value",,""\n2,"multi\nline\r\n",\\N,"NULL"\n3,\xf0\x9f\x9a\x9a,-0,1e-308\n'
PAYLOAD = ROWS * 5000  # ~250 kB: several compressor blocks


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


# ------------------------------------------------------------------------------------------- naming


def test_batch_stem_uses_the_zone_abbreviation() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)
    assert batch_stem(42, at, NAIROBI) == "20240102_060405_EAT_42"  # UTC+3, microseconds dropped
    assert batch_stem(7, at, ZoneInfo("UTC")) == "20240102_030405_UTC_7"
    # across midnight in local time
    assert batch_stem(1, datetime(2024, 12, 31, 22, 30, tzinfo=UTC), NAIROBI) == "20250101_013000_EAT_1"


def test_batch_stem_follows_daylight_saving_and_numeric_abbreviations() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert batch_stem(3, datetime(2024, 7, 1, 12, tzinfo=UTC), berlin) == "20240701_140000_CEST_3"
    assert batch_stem(3, datetime(2024, 1, 1, 12, tzinfo=UTC), berlin) == "20240101_130000_CET_3"
    # zones whose tz database abbreviation is numeric keep the sign
    assert batch_stem(5, datetime(2024, 1, 1, 12, tzinfo=UTC), ZoneInfo("Europe/Istanbul")) == "20240101_150000_+03_5"
    assert batch_stem(6, datetime(2024, 7, 1, 12, tzinfo=UTC), ZoneInfo("America/Sao_Paulo")) == \
        "20240701_090000_-03_6"


def test_data_name() -> None:
    assert data_name("20240102_060405_EAT_42", "gzip") == "20240102_060405_EAT_42.csv.gz"
    assert data_name("20240102_060405_EAT_42", "none") == "20240102_060405_EAT_42.csv"


@pytest.mark.parametrize("name", [
    "20240102_060405_EAT_42.csv.gz",
    "20240102_060405_EAT_42.csv",
    "20240102_060405_EAT_42.manifest.json",
    "exports/position_history/20240102_060405_EAT_42.csv.gz",
])
def test_stem_of_batch_files(name: str) -> None:
    assert stem_of(name) == "20240102_060405_EAT_42"
    assert run_id_of("20240102_060405_EAT_42") == 42


def test_stem_and_run_id_with_numeric_zone_and_big_ids() -> None:
    assert stem_of("20240101_150000_+03_123456789012.csv") == "20240101_150000_+03_123456789012"
    assert run_id_of("20240101_150000_+03_123456789012") == 123456789012
    assert run_id_of("20240701_090000_-03_6") == 6


@pytest.mark.parametrize("name", [
    "notes.txt",
    "README.csv",
    "20240102_EAT_42.csv",
    "20240102_060405_EAT_x.csv",
    ".20240102_060405_EAT_42.csv.gz.1a2b3c4d.part",
    "20240102_060405_EAT_42.csv.gz.tmp",
    "20240102_060405_EAT_42.json",
])
def test_stem_of_foreign_files(name: str) -> None:
    assert stem_of(name) is None


def test_run_id_of_rejects_foreign_names() -> None:
    with pytest.raises(ValueError):
        run_id_of("not_a_batch")


def test_stems_round_trip() -> None:
    for run_id in (1, 9, 10, 99999):
        stem = batch_stem(run_id, datetime.now(UTC), NAIROBI)
        assert stem_of(data_name(stem, "gzip")) == stem
        assert stem_of(stem + MANIFEST_SUFFIX) == stem
        assert run_id_of(stem) == run_id


# ---------------------------------------------------------------------------------------- round trip


def write_batch(store: LocalStore, compression: str, payload: bytes = PAYLOAD,
                run_id: int = 42) -> tuple[Manifest, str, str]:
    stem = batch_stem(run_id, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), NAIROBI)
    data_key = f"exports/t/{data_name(stem, compression)}"
    manifest_key = f"exports/t/{stem}{MANIFEST_SUFFIX}"
    with store.open_write(data_key) as handle:
        writer = BatchWriter(handle, compression, 1)
        view = memoryview(payload)
        for i in range(0, len(payload), 7777):  # odd chunk sizes, as COPY delivers them
            writer.write(view[i:i + 7777])
        writer.finish()
    manifest = Manifest(
        run_id=run_id, table="t", mode="incremental", data_file=data_key.rsplit("/", 1)[-1],
        compression=compression, columns=[{"name": "id", "type": "bigint"}, {"name": "v", "type": "text"}],
        key=["id"], window_start=None, window_end="2024-01-02T03:04:05+00:00", rows=payload.count(b"\n"),
        bytes=writer.bytes, sha256=writer.digest.hexdigest(), created_at="2024-01-02T03:04:06+00:00",
        extra={"uncompressed_bytes": writer.raw_bytes})
    assert writer.raw_bytes == len(payload)
    write_manifest(store, manifest_key, manifest)
    return manifest, manifest_key, data_key


def read_all(store: LocalStore, key: str, manifest: Manifest) -> bytes:
    return b"".join(read_verified(store, key, manifest))


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_round_trip(store: LocalStore, tmp_path: Path, compression: str) -> None:
    manifest, manifest_key, data_key = write_batch(store, compression)
    on_disk = (tmp_path / data_key).read_bytes()
    # the manifest describes the bytes as stored
    assert manifest.bytes == len(on_disk) == store.size(data_key)
    assert manifest.sha256 == hashlib.sha256(on_disk).hexdigest()
    if compression == "gzip":
        assert data_key.endswith(".csv.gz") and gzip.decompress(on_disk) == PAYLOAD
        assert len(on_disk) < len(PAYLOAD)
    else:
        assert data_key.endswith(".csv") and on_disk == PAYLOAD
    # the manifest reads back equal
    again = read_manifest(store, manifest_key)
    assert again == manifest
    assert again.column_names == ["id", "v"]
    # and the data reads back byte for byte
    assert read_all(store, data_key, again) == PAYLOAD


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_empty_batch_round_trips(store: LocalStore, compression: str) -> None:
    manifest, _, data_key = write_batch(store, compression, payload=b"")
    assert manifest.rows == 0
    assert read_all(store, data_key, manifest) == b""


def test_manifest_with_unknown_format_is_refused(store: LocalStore, tmp_path: Path) -> None:
    _, manifest_key, _ = write_batch(store, "gzip")
    path = tmp_path / manifest_key
    path.write_text(path.read_text().replace("bronzeline.batch/1", "other/9"))
    with pytest.raises(BatchError, match="manifest is not readable"):
        read_manifest(store, manifest_key)
    path.write_text("{not json")
    with pytest.raises(BatchError, match="manifest is not readable"):
        read_manifest(store, manifest_key)


# -------------------------------------------------------------------------------------- verification


def test_truncated_gzip_is_refused(store: LocalStore, tmp_path: Path) -> None:
    manifest, _, data_key = write_batch(store, "gzip")
    path = tmp_path / data_key
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BatchError):
        read_all(store, data_key, manifest)


def test_truncated_gzip_is_refused_even_when_the_manifest_agrees(store: LocalStore, tmp_path: Path) -> None:
    """A writer that died mid-stream and then wrote a manifest for what it had: the gzip stream itself
    tells the file is incomplete."""
    manifest, _, data_key = write_batch(store, "gzip")
    path = tmp_path / data_key
    cut = path.read_bytes()[:-20]  # lose the end of the deflate stream and the gzip trailer
    path.write_bytes(cut)
    manifest.bytes, manifest.sha256 = len(cut), hashlib.sha256(cut).hexdigest()
    with pytest.raises(BatchError, match="truncated"):
        read_all(store, data_key, manifest)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_edited_byte_is_refused(store: LocalStore, tmp_path: Path, compression: str) -> None:
    manifest, _, data_key = write_batch(store, compression)
    path = tmp_path / data_key
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at] ^= 0x01  # one bit, same length
    path.write_bytes(bytes(data))
    with pytest.raises(BatchError) as info:
        read_all(store, data_key, manifest)
    if compression == "none":
        assert "sha256" in str(info.value)


def test_edited_byte_in_uncompressed_csv_names_the_checksum(store: LocalStore, tmp_path: Path) -> None:
    manifest, _, data_key = write_batch(store, "none")
    path = tmp_path / data_key
    path.write_bytes(path.read_bytes().replace(b"1,", b"9,", 1))
    with pytest.raises(BatchError, match="sha256"):
        read_all(store, data_key, manifest)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_wrong_byte_count_is_refused(store: LocalStore, compression: str) -> None:
    manifest, _, data_key = write_batch(store, compression)
    manifest.bytes += 1
    with pytest.raises(BatchError, match="bytes"):
        read_all(store, data_key, manifest)


def test_extra_bytes_appended_are_refused(store: LocalStore, tmp_path: Path) -> None:
    manifest, _, data_key = write_batch(store, "none")
    with open(tmp_path / data_key, "ab") as handle:
        handle.write(b"4,extra\n")
    with pytest.raises(BatchError):
        read_all(store, data_key, manifest)


def test_garbage_instead_of_gzip_is_refused(store: LocalStore, tmp_path: Path) -> None:
    manifest, _, data_key = write_batch(store, "gzip")
    garbage = b"this is not gzip at all\n" * 10
    (tmp_path / data_key).write_bytes(garbage)
    manifest.bytes, manifest.sha256 = len(garbage), hashlib.sha256(garbage).hexdigest()
    with pytest.raises(BatchError, match="gzip"):
        read_all(store, data_key, manifest)


def test_missing_data_file(store: LocalStore) -> None:
    manifest, _, data_key = write_batch(store, "gzip")
    store.delete(data_key)
    with pytest.raises(StoreError, match="does not exist"):
        read_all(store, data_key, manifest)


# -------------------------------------------------------------------------------------------- store


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_open_write_appears_only_when_complete(store: LocalStore, tmp_path: Path) -> None:
    final = tmp_path / "exports" / "t" / "b.csv"
    with store.open_write("exports/t/b.csv") as handle:
        handle.write(b"partial")
        assert not final.exists()
        assert not store.exists("exports/t/b.csv")
    assert final.read_bytes() == b"partial"
    assert files_under(tmp_path) == ["exports/t/b.csv"]  # no .part file left behind


def test_open_write_failure_leaves_nothing(store: LocalStore, tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.open_write("exports/t/c.csv.gz") as handle:
        handle.write(b"x" * 100_000)
        raise Boom
    assert not (tmp_path / "exports" / "t" / "c.csv.gz").exists()
    assert files_under(tmp_path) == []
    assert store.list("exports/t") == []


def test_open_write_failure_keeps_an_existing_file(store: LocalStore, tmp_path: Path) -> None:
    with store.open_write("k.csv") as handle:
        handle.write(b"old")
    with pytest.raises(RuntimeError), store.open_write("k.csv") as handle:
        handle.write(b"new and incomplete")
        raise RuntimeError("died")
    assert (tmp_path / "k.csv").read_bytes() == b"old"
    assert files_under(tmp_path) == ["k.csv"]


def test_list_is_sorted_and_lists_files_only(store: LocalStore) -> None:
    names = ["20240102_060405_EAT_9.csv.gz", "20240101_000000_EAT_10.manifest.json", "b.txt", "a.txt",
             "20240101_000000_EAT_10.csv.gz"]
    for name in names:
        with store.open_write(f"exports/t/{name}") as handle:
            handle.write(name.encode())
    with store.open_write("exports/t/sub/nested.txt") as handle:
        handle.write(b"nested")
    listed = store.list("exports/t")
    assert listed == [f"exports/t/{n}" for n in sorted(names)]
    assert store.list("exports/none") == []
    assert store.list("exports/t/sub") == ["exports/t/sub/nested.txt"]


def test_copy_exists_size_delete(store: LocalStore, tmp_path: Path) -> None:
    manifest, manifest_key, data_key = write_batch(store, "gzip")
    dst = "processed/t/" + data_key.rsplit("/", 1)[-1]
    store.copy(data_key, dst)
    assert store.exists(dst) and store.size(dst) == store.size(data_key)
    assert read_all(store, dst, manifest) == PAYLOAD
    assert [p for p in os.listdir(tmp_path / "processed" / "t") if p.endswith(".part")] == []
    store.delete(data_key)
    store.delete(data_key)  # deleting twice is fine
    assert not store.exists(data_key)
    assert store.list("exports/t") == [manifest_key]
    assert store.modified_at(dst) > 0
    assert store.display(dst) == f"file://{tmp_path}/{dst}"
