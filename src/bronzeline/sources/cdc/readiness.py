"""What `migrate` checks at a source before it sets up `mode: cdc` tables: logical WAL, a login that may
replicate, the publication and its tables, each table's replica identity against `key:`, and room for
the slot. Reads only. Every fix is printed as the exact statement a DBA runs; identifiers are quoted by
the server's own quote_ident.

Problems about the source as a whole (wal_level, the login, the publication's options, slots) stop
every cdc table of that source; the others stop only their table. Either way a stopped table is named
in `rejected`, and migrate leaves it untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.sources.base import CdcFindings

_SERVER_SQL = """
SELECT current_setting('wal_level'), current_user, pg_is_in_recovery(),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       (SELECT rolreplication FROM pg_roles WHERE rolname = current_user),
       current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
       s.slot_name IS NOT NULL, s.slot_type, s.plugin, s.database, current_database(),
       current_setting('server_version_num')::int
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""

# Per table: kind, replica identity setting, primary key columns, replica identity index and its columns.
_TABLE_SQL = """
SELECT c.relkind::text, c.relreplident::text,
  (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
     CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
   WHERE i.indrelid = c.oid AND i.indisprimary),
  (SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
   WHERE i.indrelid = c.oid AND i.indisreplident),
  (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
     CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
   WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""

_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence"}
_PUBLISH = ("insert", "update", "delete")


def cdc_readiness(conn: psycopg.Connection[Any], source: str, tables: list[TableConfig], publication: str,
                  slot: str) -> CdcFindings:
    """Everything `mode: cdc` needs at one source, for its cdc tables (`source` names it in messages)."""
    found = CdcFindings()
    if not tables:
        return found
    names = [t.name for t in tables]
    row = conn.execute(_SERVER_SQL, (slot,)).fetchone()
    assert row is not None
    (wal_level, user, in_recovery, superuser, replication, max_slots, used_slots, slot_exists, slot_type,
     plugin, slot_db, database, version) = row
    quote = _Quoter(conn)
    where = f"source {source!r} (cdc tables {', '.join(names)})"
    wide: list[str] = []
    if in_recovery:
        wide.append(f"{where}: the server is a replica (in recovery); logical decoding reads the primary, "
                    "point the connection at it")
    if wal_level != "logical":
        wide.append(f"{where}: wal_level is {wal_level}, change data capture needs logical; a DBA must run "
                    "ALTER SYSTEM SET wal_level = logical; and restart the server")
    if not (superuser or replication):
        wide.append(f"{where}: the login {user} has neither REPLICATION nor superuser, which reading a "
                    "replication slot needs; a DBA must run "
                    f"ALTER ROLE {quote.ident(str(user))} REPLICATION;")
    if not slot_exists and used_slots >= max_slots:
        wide.append(f"{where}: no room for the slot {slot}: {used_slots} of max_replication_slots = {max_slots} "
                    f"are in use; a DBA must drop an unused slot or run ALTER SYSTEM SET max_replication_slots "
                    f"= {max_slots + 1}; and restart the server")
    elif slot_exists and (slot_type != "logical" or plugin != "pgoutput" or slot_db != database):
        wide.append(f"{where}: a slot named {slot} exists but is not bronzeline's ({slot_type}, plugin {plugin}, "
                    f"database {slot_db}); set `cdc.slot:` to another name")
    relations = {t.name: _relation(t) for t in tables}
    keyless: set[str] = set()
    for table in tables:
        problem = _identity_problem(conn, quote, table, relations[table.name])
        if problem is not None:
            found.problems.append(problem[0])
            found.rejected.add(table.name)
            if problem[1]:
                keyless.add(table.name)
    wide += _publication(conn, quote, where, tables, publication, relations, keyless, int(version), found)
    if wide:
        found.problems[:0] = wide
        found.rejected.update(names)
    return found


def _relation(table: TableConfig) -> tuple[str, str]:
    rel = table.source_relation
    assert rel is not None, "cdc tables are `from:` tables (the config says so)"
    return rel


class _Quoter:
    """Identifiers as the server quotes them (only when needed), for statements a DBA copies."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def ident(self, name: str) -> str:
        row = self.conn.execute("SELECT quote_ident(%s)", (name,)).fetchone()
        return str(row[0]) if row else name

    def relation(self, rel: tuple[str, str]) -> str:
        return f"{self.ident(rel[0])}.{self.ident(rel[1])}"

    def relations(self, rels: Iterable[tuple[str, str]]) -> str:
        return ", ".join(self.relation(r) for r in rels)


def _identity_problem(conn: psycopg.Connection[Any], quote: _Quoter, table: TableConfig,
                      rel: tuple[str, str]) -> tuple[str, bool] | None:
    """(message, keyless) when the table cannot be captured as configured; None when it can (or when it
    does not exist: describe() reports that)."""
    row = conn.execute(_TABLE_SQL, (sql.Identifier(*rel).as_string(conn),)).fetchone()
    if row is None:
        return None
    kind, ident, pk, ident_index, ident_cols = row
    shown = quote.relation(rel)
    if kind not in ("r", "p"):
        return f"{table.name}: {rel[0]}.{rel[1]} is {_KINDS.get(kind, 'not a table')}; cdc reads tables only", False
    key = ", ".join(table.key)
    if ident == "f":
        return None  # the whole old row identifies it; `key:` only has to be unique (migrate checks that)
    identity: list[str] | None = None
    what = ""
    if ident == "d" and pk:
        identity, what = list(pk), "its primary key"
    elif ident == "i" and ident_cols:
        identity, what = list(ident_cols), f"its replica identity index {ident_index}"
    if identity is None:
        add_pk = f"ALTER TABLE {shown} ADD PRIMARY KEY ({', '.join(quote.ident(k) for k in table.key)});"
        return (f"{table.name}: {rel[0]}.{rel[1]} has no primary key or replica identity, so its updates and "
                f"deletes cannot be told apart; a DBA must run ALTER TABLE {shown} REPLICA IDENTITY FULL; "
                f"or add a primary key ({add_pk}) before the table joins the publication "
                "(UPDATE and DELETE fail at the source on a published table without one)"), True
    if set(identity) != set(table.key):
        return (f"{table.name}: key ({key}) is not the replica identity of {rel[0]}.{rel[1]}, {what} "
                f"({', '.join(identity)}); set `key: [{', '.join(identity)}]` (deletes and key changes arrive "
                "by the replica identity)"), False
    return None


def _publication(conn: psycopg.Connection[Any], quote: _Quoter, where: str, tables: list[TableConfig],
                 publication: str, relations: dict[str, tuple[str, str]], keyless: set[str], version: int,
                 found: CdcFindings) -> list[str]:
    """Source-wide publication problems (returned); tables missing from it or published in part are
    added to `found` (one statement for all the missing ones)."""
    exists = {t.name for t in tables
              if (conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                               (sql.Identifier(*relations[t.name]).as_string(conn),)).fetchone() or [False])[0]}
    joinable = [relations[t.name] for t in tables if t.name in exists and t.name not in keyless]
    pub = quote.ident(publication)
    row = conn.execute("SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = %s",
                       (publication,)).fetchone()
    if row is None:
        fix = (f"a DBA must run CREATE PUBLICATION {pub} FOR TABLE {quote.relations(joinable)};" if joinable
               else "a DBA creates it once the tables are fixed")
        return [f"{where}: the publication {publication} does not exist; {fix}"]
    wide: list[str] = []
    off = [what for what, on in zip(_PUBLISH, row, strict=True) if not on]
    if off:
        wide.append(f"{where}: the publication {publication} does not publish {', '.join(off)}; a DBA must run "
                    f"ALTER PUBLICATION {pub} SET (publish = 'insert, update, delete, truncate');")
    partial = "attnames, rowfilter" if version >= 150000 else "NULL::text[], NULL::text"
    rows = conn.execute(sql.SQL("SELECT schemaname::text, tablename::text, {} FROM pg_publication_tables "
                                "WHERE pubname = %s").format(sql.SQL(partial)), (publication,)).fetchall()
    published = {(str(s), str(t)): (cols, rowfilter) for s, t, cols, rowfilter in rows}
    missing: list[tuple[str, str]] = []
    missing_names: list[str] = []
    for table in tables:
        rel = relations[table.name]
        if table.name not in exists:
            continue
        if rel not in published:
            found.rejected.add(table.name)
            if table.name not in keyless:
                missing.append(rel)
                missing_names.append(table.name)
            continue
        cols, rowfilter = published[rel]
        every = conn.execute("SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                             "AND attnum > 0 AND NOT attisdropped",
                             (sql.Identifier(*rel).as_string(conn),)).fetchone()
        narrowed = cols is not None and every is not None and set(every[0] or []) - set(cols)
        if rowfilter is not None or narrowed:
            how = f"only rows WHERE {rowfilter}" if rowfilter is not None else "only some of its columns"
            shown = quote.relation(rel)
            found.problems.append(
                f"{table.name}: the publication {publication} publishes {how} of {rel[0]}.{rel[1]}, so bronze "
                f"would miss changes; a DBA must run ALTER PUBLICATION {pub} DROP TABLE {shown}; "
                f"ALTER PUBLICATION {pub} ADD TABLE {shown};")
            found.rejected.add(table.name)
    if missing:
        found.problems.append(
            f"{', '.join(missing_names)}: the publication {publication} at source {tables[0].source!r} lacks "
            f"{', '.join(f'{s}.{t}' for s, t in missing)}; a DBA must run ALTER PUBLICATION {pub} ADD TABLE "
            f"{quote.relations(missing)};")
    return wide
