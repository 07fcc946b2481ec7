"""The ObjectStore seam. Paths are keys relative to the project's root in the store."""

from __future__ import annotations

import hashlib
import uuid
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

from bronzeline.errors import StoreError
from bronzeline.text import first_line

CHUNK = 8 << 20
TEMP_SUFFIX = ".part"


class ObjectStore(Protocol):
    def display(self, key: str) -> str:
        """A URL for messages (never carries a secret)."""

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writer whose object appears under `key` only when the block exits cleanly."""

    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]: ...

    def list(self, prefix: str) -> list[str]:
        """Keys of the files directly under folder `prefix` (no trailing slash), sorted."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def checksum(self, key: str) -> str:
        """sha256 of the stored bytes."""

    def delete(self, key: str) -> None: ...

    def copy(self, src: str, dst: str) -> None: ...

    def move(self, src: str, dst: str) -> None:
        """Move without ever losing the object: a rename where the store has one, else copy,
        verify, then delete."""

    def modified_at(self, key: str) -> float:
        """Seconds since the epoch."""


def temp_name(name: str) -> str:
    """The one temporary-file scheme: `.<name>.<random>.part` beside the target. A store that
    writes under a temporary name removes it on failure; one left by a killed process is
    recognised by `is_temp` (and deleted by the next run)."""
    return f".{name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"


def is_temp(name: str) -> bool:
    """A file name (without folders) made by `temp_name`."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(TEMP_SUFFIX)


def store_failure(what: str, url: str, exc: BaseException) -> StoreError:
    """A StoreError for a failed operation, with the client library's exception as its cause
    (pipeline.attempts.classify reads the cause: the message's wording decides nothing)."""
    text = first_line(str(exc))
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    error = StoreError(f"object store: {what} {url} failed ({detail[:300]}); check that the store is reachable "
                       "and the bucket and credentials are right")
    error.__cause__ = exc
    return error


def sha256_of(store: ObjectStore, key: str) -> str:
    """sha256 of an object's stored bytes, streamed."""
    digest = hashlib.sha256()
    with store.open_read(key) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
