"""The Jimi IoT / Tracksolid Pro open platform as a source (`type: tracksolid`)."""

from __future__ import annotations

from typing import Any

from bronzeline.sources import SOURCES, SourceEnv
from bronzeline.sources.base import Source


def _tracksolid(name: str, cfg: Any, env: SourceEnv) -> Source:
    from bronzeline.sources.tracksolid.source import TracksolidSource

    return TracksolidSource(name, cfg, env)


SOURCES["tracksolid"] = _tracksolid
