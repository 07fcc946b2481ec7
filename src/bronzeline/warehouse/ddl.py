"""Bronze tables from the source's own column types; keys, roles and grants; assertions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import Config, TableConfig
from bronzeline.sources.base import Column

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class BronzeColumn:
    name: str
    type: str


def bronze_columns(conn: Conn, schema: str, table: str) -> list[BronzeColumn] | None:
    """The bronze table's columns in order, or None when it does not exist."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    if not rows:
        exists = conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
        return [] if exists else None
    return [BronzeColumn(str(n), str(t)) for n, t in rows]


def create_table_sql(schema: str, table: TableConfig, columns: list[Column]) -> sql.Composed:
    defs: list[sql.Composable] = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns
    ]
    if table.key:
        defs.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, table.key))))
    return sql.SQL("CREATE TABLE {}.{} (\n  {}\n)").format(
        sql.Identifier(schema), sql.Identifier(table.name), sql.SQL(",\n  ").join(defs))


def has_unique_on(conn: Conn, schema: str, table: str, key: list[str]) -> bool:
    """Is there a PRIMARY KEY or a non-partial UNIQUE index on exactly these columns?"""
    row = conn.execute(
        """
        SELECT EXISTS (
          SELECT 1 FROM pg_index i
          JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL
            AND i.indexprs IS NULL
            AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                 FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k)
                = (SELECT array_agg(x ORDER BY x) FROM unnest(%s::text[]) x))
        """,
        (schema, table, key),
    ).fetchone()
    return bool(row and row[0])


def column_differences(source: list[Column], bronze: list[BronzeColumn]) -> list[str]:
    """Human-readable differences between the source's columns and bronze's."""
    src = {c.name: c.type for c in source}
    brz = {c.name: c.type for c in bronze}
    out = []
    for name, typ in src.items():
        if name not in brz:
            out.append(f"column {name} ({typ}) is at the source but not in bronze")
        elif _norm(brz[name]) != _norm(typ):
            out.append(f"column {name} is {typ} at the source but {brz[name]} in bronze")
    out.extend(f"column {name} is in bronze but no longer at the source" for name in brz if name not in src)
    return out


def _norm(typ: str) -> str:
    return typ.replace(" ", "").lower().removeprefix("public.")


def missing_roles(conn: Conn, config: Config) -> list[str]:
    wanted = [r for r in (config.warehouse.roles.owner, config.warehouse.roles.readonly) if r]
    if not wanted:
        return []
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,)).fetchall()
    found = {str(r[0]) for r in rows}
    return [r for r in wanted if r not in found]


def grant(conn: Conn, config: Config) -> None:
    """Grants for warehouse.roles: the owner may do everything, the read-only role may read."""
    roles = config.warehouse.roles
    for schema in (config.warehouse.bronze_schema, config.warehouse.control_schema):
        s = sql.Identifier(schema)
        if roles.owner:
            o = sql.Identifier(roles.owner)
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(s, o))
            conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(s, o))
            conn.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, o))
            conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT ALL ON TABLES TO {}").format(s, o))
        if roles.readonly:
            r = sql.Identifier(roles.readonly)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
            conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(s, r))
