"""Connections and the store for one command, opened lazily and closed together."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import psycopg

from bronzeline.config.models import Config
from bronzeline.connections import connect
from bronzeline.errors import WarehouseError
from bronzeline.sources import Source, open_source
from bronzeline.store import ObjectStore, open_store
from bronzeline.warehouse.control import Control

SESSION_SETTINGS = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1"}


class Context:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._warehouse: psycopg.Connection[Any] | None = None
        self._sources: dict[str, Source] = {}
        self._store: ObjectStore | None = None

    @property
    def warehouse(self) -> psycopg.Connection[Any]:
        if self._warehouse is None or self._warehouse.closed:
            name = self.config.warehouse.connection
            conn = connect(name, self.config.connections[name], WarehouseError, purpose="load")
            for key, value in SESSION_SETTINGS.items():
                conn.execute("SELECT set_config(%s, %s, false)", (key, value))
            self._warehouse = conn
        return self._warehouse

    @property
    def control(self) -> Control:
        return Control(self.warehouse, self.config.warehouse.control_schema, self.config.project)

    def source(self, name: str) -> Source:
        if name not in self._sources:
            self._sources[name] = open_source(name, self.config.connections[name])
        return self._sources[name]

    def drop_source(self, name: str) -> None:
        """Forget a source whose connection broke, so the next table reconnects."""
        src = self._sources.pop(name, None)
        if src is not None:
            with contextlib.suppress(Exception):
                src.close()

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(self.config.blob, self.config.base_dir, self.config.project)
        return self._store

    def close(self) -> None:
        for name in list(self._sources):
            self.drop_source(name)
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
