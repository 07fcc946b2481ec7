"""Crash points for the crash-safety tests.

With BRONZELINE_CRASH_AT=<point> the process kills itself with SIGKILL at that point, exactly as an
operator's `kill -9` or an OOM kill would. Read once at import; unset, every point is a no-op.
"""

from __future__ import annotations

import os
import signal

POINTS = ("extract", "uploaded", "load", "committed", "moving", "publish")
_ARMED = os.environ.get("BRONZELINE_CRASH_AT")


def crash_point(name: str) -> None:
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
