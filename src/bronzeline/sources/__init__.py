"""Sources: the Source seam and its implementations, picked by connection type."""

from __future__ import annotations

from collections.abc import Callable

from bronzeline.config.models import ConnectionConfig
from bronzeline.sources.base import Bound, Column, ServerInfo, Source, Visibility, Window
from bronzeline.sources.postgres import PostgresSource

SOURCES: dict[str, Callable[[str, ConnectionConfig], Source]] = {"postgres": PostgresSource}


def open_source(name: str, cfg: ConnectionConfig) -> Source:
    return SOURCES[cfg.type](name, cfg)


__all__ = ["Bound", "Column", "PostgresSource", "ServerInfo", "Source", "Visibility", "Window", "open_source"]
