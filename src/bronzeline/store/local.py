"""ObjectStore on a local (or mounted) directory, in the standard library only.

A file appears under its name only when complete: it is written under a temporary name beside
it (base.temp_name), flushed to disk and renamed into place; a failed write removes the temporary
file. A move is a rename (atomic: the file is in one place or the other); across file systems it is
a verified copy, then a delete.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from bronzeline.errors import BronzelineError, StoreError
from bronzeline.store.base import CHUNK, sha256_of, store_failure, temp_name


class LocalStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def display(self, key: str) -> str:
        return f"{self.url}/{key}"

    @contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except BronzelineError:
            raise
        except OSError as exc:
            raise store_failure(what, self.display(key), exc) from exc

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """A writer whose file appears under `key` only when the block exits cleanly. Failures of the
        disk raise StoreError; the caller's own exceptions pass through (and nothing appears)."""
        final = self._path(key)
        with self._errors("writing", key):
            final.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_beside(final) as tmp:
            with self._errors("writing", key):
                handle = open(tmp, "wb")  # noqa: SIM115 - closed below, after the caller's block
            with handle:
                yield handle
                with self._errors("writing", key):
                    handle.flush()
                    os.fsync(handle.fileno())
            with self._errors("writing", key):
                os.replace(tmp, final)

    @staticmethod
    @contextmanager
    def _temp_beside(final: Path) -> Iterator[Path]:
        """A temporary path beside `final`, removed unless the block renamed it into place."""
        tmp = final.with_name(temp_name(final.name))
        try:
            yield tmp
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed below, after the caller's block
        except FileNotFoundError:
            raise StoreError(f"{self.display(key)} does not exist") from None
        except OSError as exc:
            raise store_failure("opening", self.display(key), exc) from exc
        with handle, self._errors("reading", key):
            yield handle

    def list(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self._path(prefix)) as entries:
                names = [e.name for e in entries if e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise store_failure("listing", self.display(prefix), exc) from exc
        return sorted(f"{prefix}/{name}" if prefix else name for name in names)

    def exists(self, key: str) -> bool:
        with self._errors("checking", key):
            return self._path(key).exists()

    def size(self, key: str) -> int:
        with self._errors("reading the size of", key):
            return self._path(key).stat().st_size

    def modified_at(self, key: str) -> float:
        with self._errors("reading the time of", key):
            return self._path(key).stat().st_mtime

    def checksum(self, key: str) -> str:
        """sha256 of the stored bytes."""
        return sha256_of(self, key)

    def delete(self, key: str) -> None:
        with self._errors("deleting", key), suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def copy(self, src: str, dst: str) -> None:
        """Copy under a temporary name, rename into place, then verify size and checksum against
        the original; a bad copy is removed."""
        final = self._path(dst)
        with self._errors("copying to", dst):
            final.parent.mkdir(parents=True, exist_ok=True)
            with self._temp_beside(final) as tmp:
                with open(self._path(src), "rb") as reader, open(tmp, "wb") as writer:
                    while chunk := reader.read(CHUNK):
                        writer.write(chunk)
                    writer.flush()
                    os.fsync(writer.fileno())
                os.replace(tmp, final)
        if self.size(src) != self.size(dst) or self.checksum(src) != self.checksum(dst):
            self.delete(dst)
            raise StoreError(f"copying {self.display(src)} to {self.display(dst)} gave different bytes; the "
                             "original is kept, check the disk")

    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path(src), target)  # atomic: the file is in one place or the other
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StoreError(f"moving {self.display(src)} to {self.display(dst)} failed ({exc.strerror}); "
                                 "check the folder's permissions") from exc
        self.copy(src, dst)  # another file system: a verified copy, then the delete
        self.delete(src)
