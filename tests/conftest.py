"""Shared fixtures. Integration tests need BRONZELINE_TEST_PG: a superuser DSN on a throwaway
PostgreSQL 15 + PostGIS cluster (scripts/test.sh starts one and sets it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    dsn = os.environ.get("BRONZELINE_TEST_PG")
    if not dsn:
        pytest.fail("BRONZELINE_TEST_PG is not set: run the suite with scripts/test.sh")
    return dsn


def dsn_for(admin_dsn: str, **overrides: str) -> str:
    params = conninfo_to_dict(admin_dsn)
    params.update(overrides)
    return make_conninfo(**params)  # type: ignore[arg-type]


class Databases:
    """Creates fresh databases on the test cluster and drops them all at the end."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    def __call__(self, postgis: bool = True) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        dsn = dsn_for(self.admin_dsn, dbname=name)
        if postgis:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION postgis")
        return dsn

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self.created:
                # a logical replication slot (CDC tests) keeps its database from being dropped, even WITH (FORCE)
                conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s", (name,))
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE database = %s AND NOT temporary", (name,))
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_database(pg_admin_dsn: str) -> Iterator[Databases]:
    """A factory: new_database(postgis=True) -> DSN of a fresh database, dropped afterwards."""
    databases = Databases(pg_admin_dsn)
    yield databases
    databases.drop_all()


@contextmanager
def pipeline_in(admin_dsn: str, tmp: Any, databases: Databases | None = None) -> Iterator[Any]:
    """A source and a warehouse database with non-superuser logins; the logins are dropped on exit (and
    the databases, unless `databases` is given: its owner drops them)."""
    from tests.integration.pipeline import drop_pipeline, make_pipeline

    owned = databases is None
    made = Databases(admin_dsn) if databases is None else databases
    try:
        pipe, roles = make_pipeline(admin_dsn, tmp, made)
        try:
            yield pipe
        finally:
            drop_pipeline(admin_dsn, pipe, roles)
    finally:
        if owned:
            made.drop_all()


@pytest.fixture
def pipeline(pg_admin_dsn: str, tmp_path: Any, new_database: Databases) -> Iterator[Any]:
    """A source and a warehouse database with non-superuser logins (see tests/integration/pipeline.py).
    Its logins are dropped before the databases new_database made (a test may point it at one of those)."""
    with pipeline_in(pg_admin_dsn, tmp_path, new_database) as pipe:
        yield pipe
