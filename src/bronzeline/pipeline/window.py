"""Which window a run reads: a pure function of the watermark, the table's lookback, the source's safe
upper bound and what the command asked for, so that every rule about windows is unit-tested."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bronzeline.sources.base import Window


@dataclass(frozen=True)
class WindowPlan:
    window: Window
    advance: bool  # move the watermark to the window's end when the load commits
    empty: bool = False  # nothing to read: the safe bound is not past the start

    @property
    def runs(self) -> bool:
        return not self.empty


SNAPSHOT = WindowPlan(Window(None, None), advance=False)


def plan_window(*, watermark: datetime | None, bound: datetime, lookback: timedelta | None = None,
                requested: Window | None = None) -> WindowPlan:
    """The window of an incremental run.

    - A normal run reads (watermark − lookback, bound] and advances the watermark to `bound`; when
      `bound` is not past the watermark there is nothing to read (a watermark never moves back).
    - A requested window (`backfill --until`) is read as asked, its end capped at `bound` (rows
      above it may still be written by open transactions), and leaves the watermark alone.
    """
    if requested is not None:
        end = bound if requested.end is None or requested.end > bound else requested.end
        window = Window(requested.start, end)
        empty = requested.start is not None and end <= requested.start
        return WindowPlan(window, advance=False, empty=empty)
    start = watermark - lookback if (watermark is not None and lookback) else watermark
    return WindowPlan(Window(start, bound), advance=True, empty=watermark is not None and bound <= watermark)


def window_text(window: Window) -> str:
    if window.end is None:
        return "a full snapshot"
    start = window.start.isoformat() if window.start else "-infinity"
    chunk = f", chunk {window.keys.chunk}/{window.keys.of}" if window.keys is not None and window.keys.of else ""
    return f"({start}, {window.end.isoformat()}]{chunk}"
