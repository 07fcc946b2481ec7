"""A real source database, a real warehouse database, non-superuser logins and a config file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config import load_config
from bronzeline.context import Context
from bronzeline.pipeline import TableOutcome, run_tables

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Pipeline:
    tmp: Path
    source_dsn: str  # the read-only source login
    warehouse_dsn: str  # the non-superuser warehouse owner
    source_admin: str  # superuser on the source database (to write rows)
    warehouse_admin: str
    password: str
    tables_yaml: str = ""
    extra_yaml: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.tmp / "bronzeline.yml"

    @property
    def blob(self) -> Path:
        return self.tmp / "blob" / "fleet"

    def write_config(self, tables_yaml: str, extra_yaml: str = "") -> Path:
        self.tables_yaml, self.extra_yaml = tables_yaml, extra_yaml
        self.config_path.write_text(
            "project: fleet\n"
            "timezone: Africa/Nairobi\n"
            "connections:\n"
            "  source: {dsn: \"${SOURCE_DSN}\"}\n"
            "  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
            "blob:\n"
            "  url: file://./blob\n"
            f"{extra_yaml}"
            "tables:\n"
            f"{tables_yaml}"
        )
        return self.config_path

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"SOURCE_DSN": self.source_dsn, "WAREHOUSE_DSN": self.warehouse_dsn, **self.env})
        return env

    def config(self) -> Any:
        return load_config(self.config_path, self.environ())

    def context(self) -> Context:
        return Context(self.config())

    def run(self, *tables: str, **options: Any) -> list[TableOutcome]:
        """`bronzeline run` in process: the one run path, with the config's retries."""
        return run_tables(self.config(), list(tables) or None, **options)

    def cli(self, *args: str, check: bool = False, timeout: float = 120, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "bronzeline.cli", "-c", str(self.config_path), *args],
            capture_output=True, text=True, timeout=timeout, env={**self.environ(), **(env or {})}, cwd=self.tmp)
        if check and proc.returncode != 0:
            raise AssertionError(f"bronzeline {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def src(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.source_admin, autocommit=True)

    def wh(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.warehouse_admin, autocommit=True)

    def files(self, folder: str, table: str) -> list[str]:
        path = self.blob / folder / table
        return sorted(p.name for p in path.iterdir()) if path.exists() else []


def table_digest(conn: psycopg.Connection[Any], relation: str, columns: str = "*", order: str = "1") -> tuple[int, str]:
    """(row count, md5 over every row's text) — exact parity, NULLs and all."""
    schema, name = relation.split(".")
    rel = sql.Identifier(schema, name)
    cols = sql.SQL(columns)
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
        "FROM (SELECT {} FROM {} ORDER BY {}) t").format(cols, rel, sql.SQL(order))).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def make_pipeline(admin_dsn: str, tmp: Path, new_database: Any, *, stats: bool = True) -> tuple[Pipeline, list[str]]:
    """Create source + warehouse databases and two non-superuser logins; returns roles to drop."""
    from tests.conftest import dsn_for

    src_db = new_database(postgis=True)
    wh_db = new_database(postgis=True)
    suffix = uuid.uuid4().hex[:8]
    reader, owner = f"bl_reader_{suffix}", f"bl_owner_{suffix}"
    password = f"Pw{uuid.uuid4().hex}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role in (reader, owner):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
        if stats:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(reader)))
    wh_name = psycopg.conninfo.conninfo_to_dict(wh_db)["dbname"]
    with psycopg.connect(wh_db, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(str(wh_name)),
                                                                         sql.Identifier(owner)))
    with psycopg.connect(src_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tracksolid")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA tracksolid TO {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA tracksolid GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(reader)))
    pipe = Pipeline(
        tmp=tmp,
        source_dsn=dsn_for(src_db, user=reader, password=password),
        warehouse_dsn=dsn_for(wh_db, user=owner, password=password),
        source_admin=src_db, warehouse_admin=wh_db, password=password)
    return pipe, [reader, owner]


def drop_pipeline(admin_dsn: str, pipe: Pipeline, roles: list[str]) -> None:
    """Drop what the logins own in both databases, then the logins."""
    for dsn in (pipe.source_admin, pipe.warehouse_admin):
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
