"""Bronze tables from the source's own column types; keys, roles and grants; assertions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import Config, TableConfig
from bronzeline.sources.base import Column
from bronzeline.warehouse import schema_diff

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
        # Generated columns (an API table's geom) are bronze's own, never the source's.
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "ORDER BY a.attnum",
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


@dataclass(frozen=True)
class PrimaryKey:
    constraint: str
    columns: list[str]


def primary_key(conn: Conn, schema: str, table: str) -> PrimaryKey | None:
    """Bronze's PRIMARY KEY constraint (bronzeline creates it from `key:`), or None."""
    row = conn.execute(
        """
        SELECT con.conname, array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND c.relname = %s AND con.contype = 'p'
        GROUP BY con.conname
        """, (schema, table)).fetchone()
    return None if row is None else PrimaryKey(str(row[0]), list(row[1]))


def bronze_key_matches(conn: Conn, schema: str, table: str, key: list[str]) -> bool:
    """Does bronze enforce exactly `key:`? Its PRIMARY KEY is on the key's columns, or it has no PRIMARY
    KEY and a UNIQUE index on them. False after `key:` changed until `migrate` moves the primary key —
    the runner asks this before loading so a stale bronze key is not taken for duplicates at the source."""
    if not key:
        return True
    pk = primary_key(conn, schema, table)
    if pk is not None:
        return set(pk.columns) == set(key)
    return has_unique_on(conn, schema, table, key)


@dataclass(frozen=True)
class Duplicates:
    values: int  # how many key values appear more than once
    example: tuple[object, ...]  # one of them
    rows: int  # how many rows carry the example


def key_duplicates(conn: Conn, schema: str, table: str, key: list[str]) -> Duplicates | None:
    """Key values that bronze holds more than once (NULLs count as a value), or None. Scans the table."""
    cols = sql.SQL(", ").join(map(sql.Identifier, key))
    as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    row = conn.execute(sql.SQL(
        "SELECT count(*) OVER (), * FROM (SELECT {}, count(*) AS n FROM {} GROUP BY {} HAVING count(*) > 1) d "
        "ORDER BY n DESC LIMIT 1").format(as_text, sql.Identifier(schema, table), cols)).fetchone()
    if row is None:
        return None
    return Duplicates(int(row[0]), tuple(row[1:-1]), int(row[-1]))


def key_nulls(conn: Conn, schema: str, table: str, key: list[str]) -> int:
    """Rows of bronze with NULL in a key column (a PRIMARY KEY cannot hold them)."""
    cond = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in key)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        sql.Identifier(schema, table), cond)).fetchone()
    return int(row[0]) if row else 0


def set_primary_key_sql(schema: str, table: str, key: list[str], old: PrimaryKey | None) -> sql.Composed:
    """One statement: drop the old PRIMARY KEY (if any) and add one on `key`."""
    actions: list[sql.Composable] = []
    if old is not None:
        actions.append(sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(old.constraint)))
    actions.append(sql.SQL("ADD PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key))))
    return sql.SQL("ALTER TABLE {} {}").format(sql.Identifier(schema, table), sql.SQL(", ").join(actions))


def column_differences(source: list[Column], bronze: list[BronzeColumn]) -> list[str]:
    """Human-readable differences between the source's columns and bronze's (see schema_diff.compare)."""
    return [change.describe() for change in schema_diff.compare(source, bronze)]


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
    if roles.readonly:
        # The API client's cached tokens are credentials: readers of the control schema never see them.
        conn.execute(sql.SQL("REVOKE ALL ON {}.api_tokens FROM {}").format(
            sql.Identifier(config.warehouse.control_schema), sql.Identifier(roles.readonly)))
