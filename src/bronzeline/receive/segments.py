"""The spool on disk, as the receiver writes it and the push source claims it.

    <spool>/.lock                                  flock'd by the receiver for as long as it runs
    <spool>/<endpoint>/<segment>.open              the segment being appended to (one per endpoint)
    <spool>/<endpoint>/<segment>.seg               closed segments, ready to be claimed by a run
    <spool>/<endpoint>/claimed/<run_id>/<seg>.seg  taken by a run; deleted once its batch is in bronze

One acknowledged push is one line: the CRC-32 of the payload as 8 hex digits, a space, the payload (JSON,
ASCII, never a raw newline inside), a newline. Reading a segment stops at the first line that is incomplete
or fails its checksum: the writer acknowledges a push only once everything before it is fsync'd, never
appends after a failed write, and a restarted receiver opens a new segment, so what follows a bad line was
never acknowledged (a torn tail after kill -9 or power loss).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import secrets
import shutil
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OPEN, SEALED, CLAIMED, LOCK = ".open", ".seg", "claimed", ".lock"


_random = random.Random(secrets.randbits(128))  # seeded once from the OS; cheap per push


def new_push_id() -> str:
    """Unique per acknowledged push and ordered by receive time: microseconds since the epoch (hex) and
    64 random bits, so ids stay unique across restarts and several receivers."""
    return f"{time.time_ns() // 1000:014x}{_random.getrandbits(64):016x}"


def new_segment_name() -> str:
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Entry:
    """One acknowledged push as received (the token is never in `form`)."""

    push_id: str
    path: str  # the URL path it came to, e.g. /pushobd
    endpoint: str  # the endpoint (spool folder and table endpoint) it is stored under
    received_at: datetime  # aware, UTC
    remote: str | None  # the peer's address
    form: dict[str, str]  # the form fields as received, token removed

    def frame(self) -> bytes:
        payload = json.dumps({"push_id": self.push_id, "path": self.path, "endpoint": self.endpoint,
                              "received_at": self.received_at.isoformat(), "remote": self.remote,
                              "form": self.form}, separators=(",", ":"), ensure_ascii=True).encode()
        return b"%08x " % zlib.crc32(payload) + payload + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Entry | None:
        """The entry of one framed line, or None when the line is torn or corrupt."""
        if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
            return None
        payload = line[9:-1]
        try:
            if int(line[:8], 16) != zlib.crc32(payload):
                return None
            body: Any = json.loads(payload)
            return cls(str(body["push_id"]), str(body["path"]), str(body["endpoint"]),
                       datetime.fromisoformat(body["received_at"]).astimezone(UTC), body.get("remote"),
                       {str(k): str(v) for k, v in dict(body["form"]).items()})
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class SegmentReader:
    """The entries of one segment, streamed; after iterating, `torn_bytes` says how much was ignored."""

    path: Path
    torn_bytes: int = 0

    def __iter__(self) -> Iterator[Entry]:
        offset = 0
        with self.path.open("rb") as handle:
            for line in handle:
                entry = Entry.parse(line)
                if entry is None:
                    self.torn_bytes = self.path.stat().st_size - offset
                    return
                offset += len(line)
                yield entry


def fsync_dir(path: Path) -> None:
    """Make renames and new files in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolLock:
    """The receiver's exclusive flock on the spool. A run that gets it knows no receiver is appending, so
    it may claim the open segments too; it holds it only while claiming."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self, wait_seconds: float) -> bool:
        """Try for up to `wait_seconds` (a run holds the lock for milliseconds while it claims)."""
        deadline = time.monotonic() + wait_seconds
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def endpoint_dir(root: Path, endpoint: str) -> Path:
    return root / endpoint


def _segments(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))


def _claimed_dirs(folder: Path) -> list[Path]:
    claimed = folder / CLAIMED
    if not claimed.is_dir():
        return []
    return sorted((p for p in claimed.iterdir() if p.is_dir()), key=lambda p: p.name)


def seal_leftovers(root: Path) -> int:
    """Close the open segments a stopped receiver left (call with the lock held); returns how many."""
    sealed = 0
    if not root.is_dir():
        return 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for segment in _segments(folder, OPEN):
            with contextlib.suppress(FileNotFoundError):  # a run without a receiver claimed it meanwhile
                segment.rename(segment.with_suffix(SEALED))
                sealed += 1
        if sealed:
            fsync_dir(folder)
    return sealed


def has_ready(root: Path, endpoint: str) -> bool:
    """Whether a run of the endpoint's table has something to take: closed segments, or claimed ones whose
    batch never reported loaded."""
    folder = endpoint_dir(root, endpoint)
    return bool(_segments(folder, SEALED)) or any(any(d.iterdir()) for d in _claimed_dirs(folder))


def claim(root: Path, endpoint: str, run_id: int) -> list[Path]:
    """Move the endpoint's closed segments (and its open ones when no receiver holds the lock) into
    claimed/<run_id>/, together with what earlier runs claimed and never reported loaded; returns the
    segments the run's batch must hold, oldest first. The caller holds the table's lock, so no other run of
    this endpoint claims at the same time."""
    folder = endpoint_dir(root, endpoint)
    mine = folder / CLAIMED / str(run_id)
    mine.mkdir(parents=True, exist_ok=True)
    lock = SpoolLock(root)
    receiver_gone = lock.try_acquire()
    try:
        candidates = _segments(folder, SEALED) + (_segments(folder, OPEN) if receiver_gone else [])
        for segment in candidates:
            with contextlib.suppress(FileNotFoundError):  # the receiver sealed it between listing and rename
                segment.rename(mine / (segment.stem + SEALED))
    finally:
        lock.release()
    for earlier in _claimed_dirs(folder):
        if earlier == mine:
            continue
        for segment in _segments(earlier, ""):
            segment.rename(mine / segment.name)
        earlier.rmdir()
    fsync_dir(mine)
    fsync_dir(mine.parent)
    fsync_dir(folder)
    return _segments(mine, SEALED)


def forget(root: Path, endpoint: str, run_id: int) -> None:
    """The batch of `run_id` is in bronze: delete the segments it was made of."""
    mine = endpoint_dir(root, endpoint) / CLAIMED / str(run_id)
    if mine.is_dir():
        shutil.rmtree(mine)
        fsync_dir(mine.parent)
