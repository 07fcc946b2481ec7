"""Draining a slot: page N+1 is read from the source (a thread) while page N is applied in the warehouse.

Only the reading thread uses the source connection: before each read it advances the slot to the last page
the applying thread has committed (and moved to processed/), never further; the page being applied, and
the one read ahead, are skipped by LSN in the next read. A process killed anywhere leaves the slot at or
behind the warehouse's applied LSN, as without the read-ahead.
"""

from __future__ import annotations

import contextlib
import queue
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bronzeline.errors import StoreError
from bronzeline.sources.cdc.changes import SpooledPage

if TYPE_CHECKING:
    from bronzeline.pipeline.cdc_run import ChangeReader, SlotApplier

PLANNER_PAGE = 20_000  # the most changes of a page read as Change objects for the planner (memory follows it)
READ_PAGES = 10  # pages asked of the slot at once: the server decodes from the slot's restart point per peek

_END = object()


class ReadAhead:
    """Spooled pages from a reading thread, one ahead of the caller."""

    def __init__(self, reader: ChangeReader, limit: int, wanted: set[tuple[str, str]], folder: Path,
                 after_lsn: int | None, until_lsn: int | None, stop: threading.Event) -> None:
        self.reader = reader
        self.limit = limit
        self.wanted = wanted
        self.folder = folder
        self.after_lsn = after_lsn
        self.until_lsn = until_lsn
        self.stop = stop
        self.committed: int | None = None  # set by the applying thread: the slot may move up to it
        self.advanced: int | None = None
        self._halt = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._read, name="bronzeline-cdc-read", daemon=True)

    def __enter__(self) -> ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        if (exc[0] is not None or self.stop.is_set()) and self._thread.is_alive():
            self.reader.cancel()  # a failed apply, or SIGTERM: do not wait for a page nobody will apply
        while True:
            item = self._queue.get()
            if item is _END:
                break
            if isinstance(item, SpooledPage):
                item.discard()
        self._thread.join()

    def pages(self) -> Iterator[SpooledPage]:
        while True:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # for __exit__
                return
            if isinstance(item, BaseException):
                raise item  # the reading thread puts _END next, for __exit__
            assert isinstance(item, SpooledPage)
            yield item

    def _read(self) -> None:
        after = self.after_lsn
        pending: list[tuple[int, int]] = []  # (end LSN, messages) of the pages read and not advanced past
        number = 0
        try:
            while not self._halt.is_set() and not self.stop.is_set():
                committed = self.committed
                if committed is not None and committed != self.advanced:
                    self.reader.advance(committed)
                    self.advanced = committed
                    pending = [p for p in pending if p[0] > committed]
                folder = self.folder / f"p{number}"
                folder.mkdir()
                number += 1
                more = False
                with contextlib.closing(self.reader.read_pages(
                        self.limit, folder, after, self.wanted, pages=READ_PAGES,
                        skip_rows=sum(m for _, m in pending))) as pages:
                    for page in pages:
                        self._queue.put(page)
                        if page.needs_planner or page.end_lsn is None or (
                                self.until_lsn is not None and page.end_lsn >= self.until_lsn):
                            return
                        pending.append((page.end_lsn, page.messages))
                        after = page.end_lsn
                        more = not page.caught_up
                        if self._halt.is_set() or self.stop.is_set():
                            return
                if not more:
                    return
        except OSError as exc:  # the scratch folder (a full disk)
            self._queue.put(StoreError(
                f"writing a page of changes to {self.folder} failed ({exc.strerror or exc}); free space there or "
                "set TMPDIR to a folder with room (a page takes about 130 bytes per change)"))
        except BaseException as exc:  # handed to the applying thread, which raises it
            with contextlib.suppress(Exception):
                self._queue.put(exc)
        finally:
            self._queue.put(_END)


def drain(applier: SlotApplier, reader: ChangeReader, until_lsn: int | None, stop: threading.Event) -> bool:
    """Apply pages until caught up (or past `until_lsn`); returns whether anything was waiting. Pages are read
    into line files in a scratch folder (local disk, removed at the end), one ahead of the apply. A page the
    set-based apply cannot do exactly is read again as Change objects, at most PLANNER_PAGE, for the planner."""
    busy = False
    limit = applier.config.cdc.page_changes
    wanted = {t.source_relation for t in applier.tables if t.source_relation is not None}
    with tempfile.TemporaryDirectory(prefix="bronzeline-cdc-") as scratch:
        round_ = 0
        while not stop.is_set():
            applied = applier.applied_lsn()
            folder = Path(scratch) / f"r{round_}"
            folder.mkdir()
            round_ += 1
            planner = done = False
            with ReadAhead(reader, limit, wanted, folder, applied, until_lsn, stop) as ahead:
                for page in ahead.pages():
                    if page.needs_planner:
                        page.discard()
                        planner = True
                        break
                    if page.end_lsn is None:
                        done = True
                        break
                    replay = applied is not None and page.end_lsn <= applied
                    applier.apply_spooled(page, None)
                    ahead.committed = page.end_lsn
                    busy = busy or not replay
                    if page.caught_up or replay or stop.is_set() or (
                            until_lsn is not None and page.end_lsn >= until_lsn):
                        done = True
                        break
                else:
                    done = True  # the reading thread stopped (SIGTERM)
            if ahead.committed is not None:
                reader.advance(ahead.committed)
            if planner:
                page_objects = reader.read_page(min(limit, PLANNER_PAGE), after_lsn=applier.applied_lsn())
                if page_objects.end_lsn is None:
                    return busy
                applier.apply_page(page_objects, reader)
                busy = True
                done = page_objects.caught_up or (until_lsn is not None and page_objects.end_lsn >= until_lsn)
            if done:
                return busy
    return busy
