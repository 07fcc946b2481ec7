"""The ObjectStore seam. Paths are keys relative to the project's root in the store."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol


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
