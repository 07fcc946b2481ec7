"""Sources: the Source seam and its implementations, picked by connection type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bronzeline.sources.api.ledger import ApiLedger
from bronzeline.sources.base import Bound, Column, ServerInfo, Source, Visibility, Window
from bronzeline.sources.postgres import PostgresSource


@dataclass(frozen=True)
class SourceEnv:
    """What a source may need beyond its connection config, handed in by whoever opens it: the folder
    relative paths start from, and the warehouse's token store and call log (API sources)."""

    base_dir: Path = field(default_factory=lambda: Path("."))
    ledger: ApiLedger | None = None


def _postgres(name: str, cfg: Any, env: SourceEnv) -> Source:
    return PostgresSource(name, cfg)


# Implementations register here by connection `type:` (API and push sources import lazily: their modules
# pull in HTTP clients the database path does not need).
SOURCES: dict[str, Callable[[str, Any, SourceEnv], Source]] = {"postgres": _postgres}


def _api_sources() -> None:
    from bronzeline.sources import push, tracksolid  # noqa: F401 - they register themselves


def open_source(name: str, cfg: Any, env: SourceEnv | None = None) -> Source:
    if cfg.type not in SOURCES:
        _api_sources()
    return SOURCES[cfg.type](name, cfg, env or SourceEnv())


__all__ = ["Bound", "Column", "PostgresSource", "ServerInfo", "Source", "SourceEnv", "Visibility", "Window",
           "open_source"]
