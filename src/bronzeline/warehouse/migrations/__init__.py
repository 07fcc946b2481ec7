"""Numbered, checksummed control-schema migrations. An applied migration is never rewritten."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.errors import MigrationError


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def available() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def apply(conn: psycopg.Connection[Any], control: str) -> list[str]:
    """Apply pending migrations in one transaction; return the names applied."""
    ctl = sql.Identifier(control)
    applied_now: list[str] = []
    with conn.transaction():
        # One migrate at a time per control schema.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (f"bronzeline-migrate:{control}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ctl))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())").format(ctl))
        rows = conn.execute(sql.SQL("SELECT version, name, checksum FROM {}.schema_migrations").format(ctl))
        done = {int(v): (str(n), str(c)) for v, n, c in rows.fetchall()}
        for migration in available():
            if migration.version in done:
                name, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} ({name}) was changed after it was applied to "
                        f"{control}; restore the original file or upgrade with a new numbered migration")
                continue
            conn.execute(sql.SQL(migration.text).format(control=ctl))
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)").format(ctl),
                (migration.version, migration.name, migration.checksum))
            applied_now.append(migration.name)
    return applied_now


def check(conn: psycopg.Connection[Any], control: str) -> list[str]:
    """Problems with the applied migrations (missing or changed), for verify and run."""
    ctl = sql.Identifier(control)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (sql.SQL("{}.schema_migrations").format(ctl).as_string(conn),)).fetchone()
    if not exists or not exists[0]:
        return [f"the control schema {control} is not set up; run `bronzeline migrate`"]
    rows = conn.execute(sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(ctl)).fetchall()
    done = {int(v): str(c) for v, c in rows}
    problems = []
    for migration in available():
        if migration.version not in done:
            problems.append(f"migration {migration.name} is not applied; run `bronzeline migrate`")
        elif done[migration.version] != migration.checksum:
            problems.append(f"migration {migration.name} differs from the applied one")
    return problems


def require_current(conn: psycopg.Connection[Any], control: str) -> None:
    """Raise unless the control schema is migrated and unchanged (run and status need it)."""
    problems = check(conn, control)
    if problems:
        raise MigrationError("; ".join(problems))
