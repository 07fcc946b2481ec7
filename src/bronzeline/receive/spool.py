"""The spool writer: one thread appends the pushes of every endpoint to its open segment and acknowledges them
only after an fsync (group commit: the pushes that arrived while one fsync ran share the next one, so the
receiver acknowledges thousands of pushes a second with a few hundred fsyncs). Segments are closed (renamed
to .seg) when asked (before each flush), when they grow past a size, or when they get old; the format and
the claiming side are in segments.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bronzeline.errors import BronzelineError
from bronzeline.receive.segments import OPEN, SEALED, Entry, fsync_dir, new_segment_name


class SpoolError(BronzelineError):
    """A push could not be made durable (disk full, I/O error, the spool is closing): it is not acknowledged."""


@dataclass
class _Pending:
    endpoint: str
    frame: bytes
    waiter: asyncio.Future[None] | concurrent.futures.Future[None]
    loop: asyncio.AbstractEventLoop | None = None


@dataclass
class _Open:
    path: Path
    fd: int
    size: int = 0
    opened: float = field(default_factory=time.monotonic)


class SpoolWriter:
    """Durable appends for the receiver. `append` (async) and `append_wait` return once the entry is
    fsync'd; `seal` closes every open segment (after the entries submitted before it are durable)."""

    def __init__(self, root: Path, *, segment_bytes: int = 64 << 20, segment_seconds: float = 300.0,
                 on_commit: Callable[[int, float], None] | None = None) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.on_commit = on_commit  # (entries, seconds) per group commit, for metrics
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._seals: list[threading.Event] = []
        self._closing = False
        self._open: dict[str, _Open] = {}
        self._thread = threading.Thread(target=self._loop, name="bronzeline-spool", daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ callers
    async def append(self, entry: Entry) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._submit(_Pending(entry.endpoint, entry.frame(), waiter, loop))
        await waiter

    def append_wait(self, entry: Entry) -> None:
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(_Pending(entry.endpoint, entry.frame(), waiter))
        waiter.result()

    def seal(self, timeout: float = 60.0) -> None:
        """Close every open segment so a run can claim what was acknowledged so far."""
        done = threading.Event()
        with self._cond:
            if self._closing:
                return
            self._seals.append(done)
            self._cond.notify()
        if not done.wait(timeout):
            raise SpoolError("the spool writer did not close its segments in time")

    def close(self) -> None:
        """Make everything submitted durable, close the segments, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _submit(self, item: _Pending) -> None:
        with self._cond:
            if self._closing:
                raise SpoolError("the receiver is stopping; the push was not stored")
            self._pending.append(item)
            self._cond.notify()

    # ------------------------------------------------------------------ the writer thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._seals or self._closing):
                    if not self._cond.wait(timeout=1.0):
                        break  # look at segment ages now and then
                batch, self._pending = self._pending, []
                seals, self._seals = self._seals, []
                closing = self._closing
            if batch:
                self._commit(batch)
            self._rotate(everything=bool(seals) or closing)
            for done in seals:
                done.set()
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        by_endpoint: dict[str, list[_Pending]] = {}
        for item in batch:
            by_endpoint.setdefault(item.endpoint, []).append(item)
        failed: dict[int, BaseException] = {}
        for endpoint, items in by_endpoint.items():
            try:
                self._write(endpoint, b"".join(i.frame for i in items))
            except OSError as exc:
                error = SpoolError(f"the spool could not store the push: {exc.strerror or exc}")
                failed.update((id(i), error) for i in items)
        if self.on_commit is not None:
            self.on_commit(len(batch) - len(failed), time.monotonic() - started)
        _settle(batch, failed)

    def _write(self, endpoint: str, data: bytes) -> None:
        segment = self._segment(endpoint)
        try:
            view = memoryview(data)
            while view:
                written = os.write(segment.fd, view)
                view = view[written:]
            os.fdatasync(segment.fd)
        except OSError:
            self._abandon(endpoint, segment)
            raise
        segment.size += len(data)

    def _segment(self, endpoint: str) -> _Open:
        found = self._open.get(endpoint)
        if found is not None:
            return found
        folder = self.root / endpoint
        if not folder.is_dir():
            folder.mkdir(parents=True)
            fsync_dir(self.root)
        path = folder / (new_segment_name() + OPEN)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_dir(folder)  # the file's name is durable before the first push in it is acknowledged
        self._open[endpoint] = segment = _Open(path, fd)
        return segment

    def _abandon(self, endpoint: str, segment: _Open) -> None:
        """A failed write: cut what it may have left and close the segment, so nothing is ever appended
        after bytes that were not acknowledged (the reader stops at the first bad line)."""
        try:
            os.ftruncate(segment.fd, segment.size)
            os.fdatasync(segment.fd)
        except OSError:
            pass  # the reader stops at the bad line; pushes after it in this segment were never acknowledged
        self._close_segment(endpoint)

    def _rotate(self, everything: bool) -> None:
        now = time.monotonic()
        for endpoint, segment in list(self._open.items()):
            if everything or segment.size >= self.segment_bytes or now - segment.opened >= self.segment_seconds:
                try:
                    self._close_segment(endpoint)
                except OSError:
                    pass  # left open on disk: the next receiver start seals it

    def _close_segment(self, endpoint: str) -> None:
        segment = self._open.pop(endpoint)
        os.close(segment.fd)
        if segment.size == 0:
            segment.path.unlink(missing_ok=True)
            return
        segment.path.rename(segment.path.with_suffix(SEALED))
        fsync_dir(segment.path.parent)


def _settle(batch: list[_Pending], failed: dict[int, BaseException]) -> None:
    """Wake the waiters: thread futures directly, event-loop futures with one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]] = {}
    for item in batch:
        error = failed.get(id(item))
        if item.loop is None:
            waiter = item.waiter
            assert isinstance(waiter, concurrent.futures.Future)
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        else:
            assert isinstance(item.waiter, asyncio.Future)
            by_loop.setdefault(item.loop, []).append((item.waiter, error))
    for loop, waiters in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake, waiters)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for these answers any more


def _wake(waiters: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for waiter, error in waiters:
        if waiter.done():  # the client went away
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
