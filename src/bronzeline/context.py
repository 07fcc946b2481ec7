"""Connections and the store for one command, opened lazily and closed together."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import psycopg

from bronzeline.config.models import Config
from bronzeline.connections import connect
from bronzeline.errors import WarehouseError
from bronzeline.sources import Source, SourceEnv, open_source
from bronzeline.store import ObjectStore, open_store
from bronzeline.warehouse import migrations
from bronzeline.warehouse.control import Control


class Context:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._warehouse: psycopg.Connection[Any] | None = None
        self._load: psycopg.Connection[Any] | None = None
        self._sources: dict[str, Source] = {}
        self._store: ObjectStore | None = None
        self._migrated_on: psycopg.Connection[Any] | None = None  # where the migrations check passed

    def _connect_warehouse(self, purpose: str) -> psycopg.Connection[Any]:
        name = self.config.warehouse.connection
        return connect(name, self.config.database(name), WarehouseError, purpose=purpose)

    @property
    def warehouse(self) -> psycopg.Connection[Any]:
        """Control reads and writes, and the per-table locks (autocommit)."""
        if self._warehouse is None or self._warehouse.closed:
            self._warehouse = self._connect_warehouse("control")
        return self._warehouse

    @property
    def load_conn(self) -> psycopg.Connection[Any]:
        """Load transactions, kept apart so run rows written meanwhile are visible at once."""
        if self._load is None or self._load.closed:
            self._load = self._connect_warehouse("load")
        return self._load

    def require_migrated(self) -> None:
        """Raise unless the control schema is at this version's migrations; checked once per warehouse
        connection (a new connection, after an outage, is checked again)."""
        conn = self.warehouse
        if self._migrated_on is not conn:
            migrations.require_current(conn, self.config.warehouse.control_schema)
            self._migrated_on = conn

    @property
    def control(self) -> Control:
        return Control(self.warehouse, self.config.warehouse.control_schema, self.config.project)

    def source(self, name: str) -> Source:
        if name not in self._sources:
            self._sources[name] = open_source(name, self.config.connections[name], self.source_env())
        return self._sources[name]

    def source_env(self) -> SourceEnv:
        """What sources get beyond their config: the config's folder, and the warehouse's API ledger."""
        from bronzeline.warehouse.api_ledger import WarehouseApiLedger

        ledger = WarehouseApiLedger(lambda: self.warehouse, self.config.warehouse.control_schema)
        return SourceEnv(base_dir=self.config.base_dir, ledger=ledger)

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

    def cancel_all(self) -> None:
        """Cancel the queries in flight on every open connection (sources and warehouse). Safe to call
        from another thread, as the per-table timeout does; it never opens or closes anything."""
        with contextlib.suppress(RuntimeError):  # the dict changed while we looked: cancel what we saw
            for src in list(self._sources.values()):
                src.cancel()
        for conn in (self._warehouse, self._load):
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=2.0)

    def close(self) -> None:
        for name in list(self._sources):
            self.drop_source(name)
        for conn in (self._load, self._warehouse):
            if conn is not None:
                conn.close()
        self._warehouse = self._load = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
