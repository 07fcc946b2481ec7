"""Shared fixtures. Integration tests need BRONZELINE_TEST_PG: a superuser DSN on a throwaway
PostgreSQL 15 + PostGIS cluster (scripts/test.sh starts one and sets it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def new_database(pg_admin_dsn: str) -> Iterator[object]:
    """A factory: new_database(postgis=True) -> DSN of a fresh database, dropped afterwards."""
    created: list[str] = []

    def make(postgis: bool = True) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        dsn = dsn_for(pg_admin_dsn, dbname=name)
        if postgis:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION postgis")
        return dsn

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pipeline(pg_admin_dsn: str, tmp_path: Any, new_database: Any) -> Iterator[Any]:
    """A source and a warehouse database with non-superuser logins (see tests/integration/pipeline.py)."""
    from tests.integration.pipeline import drop_pipeline, make_pipeline

    pipe, roles = make_pipeline(pg_admin_dsn, tmp_path, new_database)
    yield pipe
    drop_pipeline(pg_admin_dsn, pipe, roles)
