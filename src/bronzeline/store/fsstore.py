"""ObjectStore over fsspec: local directories (file://) and S3-compatible stores (s3://).

Writes are atomic on both: a local file is written under a temporary name and renamed into place;
an S3 object exists only once its upload (one PUT, or a multipart upload's completion) succeeds,
and a failed or interrupted write aborts the upload instead of completing it. Copies are verified
(size and checksum) before anyone deletes the original. Failures of the store raise StoreError with
the client library's exception as the cause (retry.classify reads it).
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

import fsspec

from bronzeline.errors import BronzelineError, StoreError

_CHUNK = 8 << 20


class FsspecStore:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        protocol = self.url.split("://", 1)[0]
        try:
            self.fs: Any = fsspec.filesystem(protocol, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StoreError(f"object store {self.url}: {exc}; install the fsspec backend for {protocol}://") from None
        self.root = self.url.split("://", 1)[1] if protocol != "file" else self.url[len("file://"):]
        self.local = protocol == "file"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def display(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _fail(self, what: str, key: str, exc: BaseException) -> NoReturn:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise StoreError(f"object store: {what} {self.display(key)} failed ({detail[:300]}); check that the store "
                         "is reachable and the bucket and credentials are right") from exc

    @contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except BronzelineError:
            raise
        except Exception as exc:
            self._fail(what, key, exc)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """A writer whose object appears under `key` only when the block exits cleanly. Failures of the
        store raise StoreError; the caller's own exceptions pass through (and nothing appears)."""
        if self.local:
            with self._local_write(key) as handle:
                yield cast(BinaryIO, _Writer(self, key, handle))
            return
        with self._errors("starting the upload of", key):
            handle = self.fs.open(self._path(key), "wb")
        # Until the block ends cleanly, nothing may complete the upload: not even the file object's
        # __del__ (which closes, and so completes, whatever it holds) if it is collected unfinished.
        handle.autocommit = False
        try:
            yield cast(BinaryIO, _Writer(self, key, handle))
        except BaseException:
            self._abort(handle)
            raise
        try:
            handle.autocommit = True
            handle.close()  # one PUT, or the multipart upload's completion: the object appears now, whole
        except Exception as exc:
            self._abort(handle)
            self._fail("uploading", key, exc)

    @staticmethod
    def _abort(handle: Any) -> None:
        """Abort a multipart upload and make sure nothing (not even garbage collection) completes it."""
        with suppress(Exception):
            handle.discard()
        with suppress(Exception):
            handle.closed = True

    @contextmanager
    def _local_write(self, key: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        target = f"{os.path.dirname(final)}/.{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.part"
        try:
            with self._errors("writing", key):
                os.makedirs(os.path.dirname(final), exist_ok=True)
                handle = open(target, "wb")  # noqa: SIM115 - closed below, after the caller's block
            with handle:
                yield handle
                with self._errors("writing", key):
                    handle.flush()
                    os.fsync(handle.fileno())
            with self._errors("writing", key):
                os.replace(target, final)
        except BaseException:
            if os.path.exists(target):
                os.unlink(target)
            raise

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise StoreError(f"{self.display(key)} does not exist") from None
        except Exception as exc:
            self._fail("opening", key, exc)
        with handle, self._errors("reading", key):
            yield handle

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            entries = self.fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            if not self.local:
                self._check_bucket(prefix)
            return []
        except Exception as exc:
            self._fail("listing", prefix, exc)
        keys = []
        for entry in entries:
            if entry.get("type") == "directory":
                continue
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            keys.append(f"{prefix}/{name}")
        return sorted(keys)

    def _check_bucket(self, prefix: str) -> None:
        bucket = self.root.split("/", 1)[0]
        with self._errors("checking the bucket of", prefix):
            found = self.fs.exists(bucket)
        if not found:
            raise StoreError(f"object store: bucket {bucket!r} of {self.url} does not exist; create it "
                             "(bronzeline does not create buckets) or fix blob.url")

    def exists(self, key: str) -> bool:
        with self._errors("checking", key):
            return bool(self.fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        with self._errors("reading the size of", key):
            return int(self.fs.size(self._path(key)))

    def delete(self, key: str) -> None:
        with self._errors("deleting", key), suppress(FileNotFoundError):
            self.fs.rm(self._path(key))

    def copy(self, src: str, dst: str) -> None:
        """Copy, then verify the copy's size and checksum against the original; a bad copy is removed."""
        with self._errors("copying to", dst):
            if self.local:
                self._local_copy(src, dst)
            else:
                self.fs.copy(self._path(src), self._path(dst))
            same, why = self._same(src, dst)
        if not same:
            self.delete(dst)
            raise StoreError(f"copying {self.display(src)} to {self.display(dst)} gave a different {why}; the original "
                             "is kept, check the object store")

    def move(self, src: str, dst: str) -> None:
        if self.local:
            Path(self._path(dst)).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(self._path(src), self._path(dst))  # atomic: the file is in one place or the other
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise StoreError(f"moving {self.display(src)} to {self.display(dst)} failed ({exc.strerror}); "
                                     "check the folder's permissions") from exc
        self.copy(src, dst)
        self.delete(src)

    def _local_copy(self, src: str, dst: str) -> None:
        Path(self._path(dst)).parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name and rename, so a partial copy is never taken for whole.
        tmp = f"{self._path(dst)}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(self._path(src), "rb") as reader, open(tmp, "wb") as writer:
                while chunk := reader.read(_CHUNK):
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            os.replace(tmp, self._path(dst))
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def _same(self, src: str, dst: str) -> tuple[bool, str]:
        a, b = self.fs.info(self._path(src)), self.fs.info(self._path(dst))
        if int(a.get("size") or 0) != int(b.get("size") or 0):
            return False, "size"
        tag_a, tag_b = str(a.get("ETag") or ""), str(b.get("ETag") or "")
        if tag_a and tag_a == tag_b:
            return True, ""  # the server's MD5 (or multipart digest) of both: the same bytes
        if tag_a and tag_b and "-" not in tag_a + tag_b:
            return False, "checksum (ETag)"
        return (self.checksum(src) == self.checksum(dst)), "checksum (sha256)"

    def checksum(self, key: str) -> str:
        """sha256 of the stored bytes."""
        digest = hashlib.sha256()
        with self.open_read(key) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def modified_at(self, key: str) -> float:
        with self._errors("reading the time of", key):
            info = self.fs.info(self._path(key))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        return float(mtime.timestamp() if hasattr(mtime, "timestamp") else mtime or 0.0)


class _Writer:
    """The handle open_write yields: the store's failures become StoreError, everything else passes."""

    def __init__(self, store: FsspecStore, key: str, handle: Any) -> None:
        self._store, self._key, self._handle = store, key, handle

    def write(self, data: bytes) -> int:
        try:
            return int(self._handle.write(data) or 0)
        except Exception as exc:
            self._store._fail("writing", self._key, exc)
