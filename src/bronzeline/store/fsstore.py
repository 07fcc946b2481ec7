"""ObjectStore over fsspec: local directories (file://) and S3-compatible stores (s3://)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from bronzeline.errors import StoreError


class FsspecStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        try:
            self.fs: Any = fsspec.filesystem(protocol, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StoreError(f"object store {self.url}: {exc}; install the fsspec backend for {protocol}://") from None
        self.root = self.url.split("://", 1)[1] if protocol != "file" else self.url[len("file://"):]
        # Local writes go to a temporary name and are renamed into place; S3 objects only
        # appear once their upload completes, so they are written under the final key.
        self.local = protocol == "file"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def display(self, key: str) -> str:
        return f"{self.url}/{key}"

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        target = final
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            target = f"{os.path.dirname(final)}/.{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.part"
        try:
            with self.fs.open(target, "wb") as handle:
                yield handle
                if self.local:
                    handle.flush()
                    os.fsync(handle.fileno())
            if self.local:
                os.replace(target, final)
        except BaseException:
            if self.local and os.path.exists(target):
                os.unlink(target)
            raise

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise StoreError(f"{self.display(key)} does not exist") from None
        with handle:
            yield handle

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        keys = []
        for entry in entries:
            if entry.get("type") == "directory":
                continue
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            keys.append(f"{prefix}/{name}")
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def delete(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self.fs.rm(self._path(key))

    def copy(self, src: str, dst: str) -> None:
        if self.local:
            Path(self._path(dst)).parent.mkdir(parents=True, exist_ok=True)
            # Copy to a temporary name and rename, so a partial copy is never taken for whole.
            tmp = f"{self._path(dst)}.{uuid.uuid4().hex[:8]}.part"
            self.fs.copy(self._path(src), tmp)
            os.replace(tmp, self._path(dst))
        else:
            self.fs.copy(self._path(src), self._path(dst))

    def modified_at(self, key: str) -> float:
        info = self.fs.info(self._path(key))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        return float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime or 0.0)
