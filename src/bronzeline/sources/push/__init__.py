"""The platform's pushes, received by `bronzeline receive` and spooled, as a source (`type: tracksolid_push`)."""

from __future__ import annotations

from bronzeline.sources import SOURCES
from bronzeline.sources.push.source import PushSource

SOURCES["tracksolid_push"] = PushSource

__all__ = ["PushSource"]
