"""Batch files and their manifests (docs/design.md, the object store): naming, streaming write, verified read."""

from __future__ import annotations

import builtins
import hashlib
import json
import queue
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from bronzeline.errors import BatchError, StoreError
from bronzeline.store.base import TEMP_SUFFIX, ObjectStore, is_temp

isal_zlib: Any
try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency, but the format does not need it
    isal_zlib = None

ZIP_ERRORS: tuple[type[BaseException], ...] = (zlib.error, isal_zlib.error) if isal_zlib else (zlib.error,)

MANIFEST_SUFFIX = ".manifest.json"
FORMAT = "bronzeline.batch/1"
_STEM = re.compile(r"^(\d{8}_\d{6})_(.+)_(\d+)$")
_CHUNK = 1 << 20


def exports_dir(table: str) -> str:
    return f"exports/{table}"


def processed_dir(table: str) -> str:
    return f"processed/{table}"


def failed_dir(table: str) -> str:
    return f"failed/{table}"


def batch_stem(run_id: int, at: datetime, tz: ZoneInfo) -> str:
    local = at.astimezone(tz)
    abbrev = re.sub(r"[^A-Za-z0-9+-]", "", local.tzname() or "UTC")
    return f"{local:%Y%m%d_%H%M%S}_{abbrev}_{run_id}"


def data_name(stem: str, compression: str, content: str = "csv") -> str:
    """`<stem>.csv[.gz]` for database tables, `<stem>.jsonl[.gz]` for API and push tables."""
    ext = "jsonl" if content == "jsonl" else "csv"
    return f"{stem}.{ext}.gz" if compression == "gzip" else f"{stem}.{ext}"


def stem_of(name: str) -> str | None:
    """The batch stem of a data or manifest file name, or None for foreign files."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (MANIFEST_SUFFIX, ".csv.gz", ".csv", ".jsonl.gz", ".jsonl"):
        if base.endswith(suffix):
            stem = base[: -len(suffix)]
            return stem if _STEM.match(stem) else None
    return None


def run_id_of(stem: str) -> int:
    match = _STEM.match(stem)
    if not match:
        raise ValueError(f"not a batch name: {stem}")
    return int(match.group(3))


def run_id_of_key(key: str) -> int | None:
    """The run id of a batch file, its manifest, or an unfinished upload of either (`.<name>.<id>.part`,
    see store.base.temp_name); None for anything else."""
    base = key.rsplit("/", 1)[-1]
    if is_temp(base):
        base = base[1:].removesuffix(TEMP_SUFFIX).rsplit(".", 1)[0]
    stem = stem_of(base)
    return None if stem is None else run_id_of(stem)


@dataclass
class Manifest:
    run_id: int
    table: str
    mode: str
    data_file: str
    compression: str
    columns: list[dict[str, str]]
    key: list[str]
    window_start: str | None
    window_end: str | None
    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    created_at: str = ""
    source_clock: str | None = None
    oldest_xact_start: str | None = None
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    content: str = "csv"  # csv (database tables), jsonl (API and push records, sources/api/records.py)

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise BatchError(f"{where}: manifest is not readable ({exc})") from None

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]


class BatchWriter:
    """Compresses, hashes and writes a batch file on a worker thread, so the caller can keep
    reading the source meanwhile. Chunks are written in order; the queue is bounded, so memory
    stays flat whatever the table's size."""

    def __init__(self, handle: BinaryIO, compression: str, level: int, queue_depth: int = 4) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.raw_bytes = 0
        self._zip = compressor(level) if compression == "gzip" else None
        self._queue: queue.Queue[builtins.bytes | None] = queue.Queue(maxsize=queue_depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="bronzeline-batch-writer", daemon=True)
        self._thread.start()

    def _emit(self, data: builtins.bytes) -> None:
        if data:
            self.handle.write(data)
            self.digest.update(data)
            self.bytes += len(data)

    def _work(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # drain after a failure, so the producer never blocks
            try:
                self._emit(self._zip.compress(chunk) if self._zip else chunk)
            except BaseException as exc:
                self._error = exc

    def write(self, chunk: builtins.bytes) -> None:
        if self._error is not None:
            raise StoreError(f"writing the batch file failed: {self._error}") from self._error
        self.raw_bytes += len(chunk)
        self._queue.put(chunk)

    def finish(self) -> None:
        """Flush everything; raise if any write failed."""
        self.close()
        if self._error is not None:
            raise StoreError(f"writing the batch file failed: {self._error}") from self._error
        if self._zip:
            self._emit(self._zip.flush())

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def write_batch_file(store: ObjectStore, key: str, chunks: Iterable[builtins.bytes], compression: str,
                     level: int) -> BatchWriter:
    """Write `chunks` as the batch file `key` (compressed, hashed); the finished writer tells its size
    and digest for the manifest."""
    with store.open_write(key) as handle:
        writer = BatchWriter(handle, compression, level)
        try:
            for chunk in chunks:
                writer.write(chunk)
            writer.finish()
        finally:
            writer.close()
    return writer


def compressor(level: int) -> Any:
    """A gzip compressor: ISA-L's (several times faster, same format) for levels 0-3 when installed."""
    if isal_zlib is not None and level <= 3:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    return zlib.compressobj(max(level, 1), zlib.DEFLATED, 31)


def decompressor() -> Any:
    return (isal_zlib or zlib).decompressobj(31)


def read_verified(store: ObjectStore, key: str, manifest: Manifest) -> Iterator[bytes]:
    """Yield the file's uncompressed bytes; raise BatchError at the end if it does not match
    its manifest (size, sha256, complete gzip stream). Callers load inside a transaction and
    commit only after this generator is exhausted, so a mismatch loads nothing."""
    digest = hashlib.sha256()
    size = 0
    unzip = decompressor() if manifest.compression == "gzip" else None
    with store.open_read(key) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            if unzip is None:
                yield chunk
                continue
            try:
                out = unzip.decompress(chunk)
            except ZIP_ERRORS as exc:
                raise BatchError(f"{store.display(key)} is not a valid gzip file ({exc})") from None
            if out:
                yield out
    if unzip is not None:
        tail = unzip.flush()
        if tail:
            yield tail
        if not unzip.eof:
            raise BatchError(f"{store.display(key)} is truncated (the gzip stream ends early)")
    if size != manifest.bytes:
        raise BatchError(f"{store.display(key)} has {size} bytes, its manifest says {manifest.bytes}")
    if digest.hexdigest() != manifest.sha256:
        raise BatchError(f"{store.display(key)} does not match the sha256 in its manifest")


def stored_matches(store: ObjectStore, key: str, manifest: Manifest) -> bool:
    """Does the stored file have the manifest's size and sha256? (No decompression needed; the size
    is asked first, so a short file is refused without reading it.)"""
    return store.size(key) == manifest.bytes and store.checksum(key) == manifest.sha256


def write_manifest(store: ObjectStore, key: str, manifest: Manifest) -> None:
    with store.open_write(key) as handle:
        handle.write(manifest.to_json())


def read_manifest(store: ObjectStore, key: str) -> Manifest:
    with store.open_read(key) as handle:
        return Manifest.from_json(handle.read(), store.display(key))


