"""Materializations, each run inside the caller's transaction: the new version is visible to the
build's own checks before the transaction commits, and to nobody else until it does (write–audit–
publish). Readers are never blocked: tables are replaced row-wise (DELETE + INSERT, MVCC keeps the old
version visible), matviews refresh CONCURRENTLY, incremental models merge on their key, and DDL that
needs an exclusive lock runs only when a definition changed, with a short lock_timeout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.errors import BronzelineError
from bronzeline.models.spec import Model

Conn = psycopg.Connection[Any]
DDL_LOCK_TIMEOUT = "2s"  # an exclusive lock must not queue readers behind it for long
_STAGE = "bl_increment"


class BuildError(BronzelineError):
    """The model could not be built (its SQL failed, its key is not unique, a reader held a lock)."""


@dataclass(frozen=True)
class Built:
    rows: int | None
    check_target: str  # the relation the model's checks read, inside the build's transaction
    window_start: datetime | None = None
    window_end: datetime | None = None
    merged_rows: str | None = None  # incremental merges: the relation holding just the rows merged


def fingerprint(model: Model) -> str:
    """What the relation's comment records, so an unchanged definition is not re-created (no lock)."""
    digest = hashlib.sha256(f"{model.materialized}\n{','.join(model.key)}\n{model.sql}".encode()).hexdigest()
    return f"bronzeline:{digest[:32]}"


def _ident(model: Model) -> sql.Identifier:
    return sql.Identifier(model.schema, model.name)


def _body(model: Model) -> sql.Composable:
    """The user's SELECT exactly as written (a trailing semicolon dropped so it can be wrapped)."""
    return sql.SQL(model.sql.strip().rstrip(";").strip())


def relkind(conn: Conn, model: Model) -> str | None:
    row = conn.execute("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (model.schema, model.name)).fetchone()
    return None if row is None else str(row[0])


def _comment(conn: Conn, model: Model) -> str | None:
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                       (_ident(model).as_string(conn),)).fetchone()
    return None if row is None else row[0]


def _set_comment(conn: Conn, model: Model, kind: str) -> None:
    conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), _ident(model),
                                                           sql.Literal(fingerprint(model))))


def _short_locks(conn: Conn) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))


def _execute_count(conn: Conn, statement: sql.Composed) -> int:
    """Run a CREATE TABLE AS / INSERT and return the rows it wrote (no second scan to count them)."""
    with conn.cursor() as cur:
        cur.execute(statement)
        return int(cur.rowcount)


def _count(conn: Conn, relation: sql.Composable) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relation)).fetchone()
    return int(row[0]) if row else 0


def _columns(conn: Conn, query: sql.Composable) -> list[tuple[str, str]]:
    """(name, type) of a query's result, without running it."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}\n) AS q LIMIT 0").format(query))
        res = cur.pgresult
        assert res is not None
        oids = [(res.fname(i) or b"").decode() for i in range(res.nfields)], [res.ftype(i) for i in range(res.nfields)]
        mods = [res.fmod(i) for i in range(res.nfields)]
        types = conn.execute("SELECT format_type(u.oid, nullif(u.mod, -1)) FROM unnest(%s::oid[], %s::int[]) "
                             "WITH ORDINALITY AS u(oid, mod, ord) ORDER BY u.ord", (oids[1], mods)).fetchall()
    return [(name, str(t[0])) for name, t in zip(oids[0], types, strict=True)]


def _table_columns(conn: Conn, model: Model) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                        "ORDER BY a.attnum", (_ident(model).as_string(conn),)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _dependents(conn: Conn, model: Model) -> list[str]:
    """Views and matviews that read this relation (they would be dropped with it)."""
    rows = conn.execute(
        """
        SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_depend d
        JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE d.refobjid = to_regclass(%s) AND c.oid <> d.refobjid ORDER BY 1
        """, (_ident(model).as_string(conn),)).fetchall()
    return [str(r[0]) for r in rows]


def drop_for_rebuild(conn: Conn, model: Model, kind: str, models: set[str]) -> list[str]:
    """Drop the relation whose shape changed. Dependent views go with it only when they are all models
    (the build re-creates them); any other dependent stops the build with its name."""
    dependents = _dependents(conn, model)
    foreign = [d for d in dependents if d not in models]
    if foreign:
        raise BuildError(f"{model.relation}: its columns changed and {', '.join(foreign)} (not a model) depends on "
                         "it; drop or change that view first")
    _short_locks(conn)
    conn.execute(sql.SQL("DROP {} {} CASCADE").format(sql.SQL(kind), _ident(model)))
    return dependents


def build_view(conn: Conn, model: Model, models: set[str]) -> tuple[Built, list[str]]:
    dropped: list[str] = []
    kind = relkind(conn, model)
    if kind != "v" or _comment(conn, model) != fingerprint(model):
        if kind is not None and kind != "v":  # a table or matview before: it goes
            dropped = drop_for_rebuild(conn, model, _KINDS[kind], models)
        _short_locks(conn)
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(_ident(model), _body(model)))
        except psycopg.errors.InvalidTableDefinition:  # columns renamed, removed or retyped
            dropped += drop_for_rebuild(conn, model, "VIEW", models)
            conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(_ident(model), _body(model)))
        _set_comment(conn, model, "VIEW")
    return Built(None, model.relation), dropped


def _table_or_rebuild(conn: Conn, model: Model, models: set[str]) -> tuple[bool, list[str]]:
    """(whether the model's table exists with the query's columns, what was dropped): a relation of
    another kind, or a table whose columns no longer match the SELECT, is dropped to be re-created."""
    kind = relkind(conn, model)
    if kind is None:
        return False, []
    if kind == "r" and _table_columns(conn, model) == _columns(conn, _body(model)):
        return True, []
    return False, drop_for_rebuild(conn, model, _KINDS[kind], models)


def build_table(conn: Conn, model: Model, models: set[str]) -> tuple[Built, list[str]]:
    ident = _ident(model)
    exists, dropped = _table_or_rebuild(conn, model, models)
    if not exists:
        rows = _execute_count(conn, sql.SQL("CREATE TABLE {} AS {}").format(ident, _body(model)))
        if model.key:
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                ident, sql.SQL(", ").join(map(sql.Identifier, model.key))))
    else:
        # Row-wise replacement: readers keep the published rows until the commit, and are never blocked.
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))
        rows = _execute_count(conn, sql.SQL("INSERT INTO {} {}").format(ident, _body(model)))
    _set_comment(conn, model, "TABLE")
    return Built(rows, model.relation), dropped


def build_matview(conn: Conn, model: Model, models: set[str]) -> tuple[Built, list[str]]:
    ident = _ident(model)
    dropped: list[str] = []
    kind = relkind(conn, model)
    if kind == "m" and _comment(conn, model) == fingerprint(model):
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(ident))
    else:
        if kind is not None:
            dropped = drop_for_rebuild(conn, model, _KINDS[kind], models)
        conn.execute(sql.SQL("CREATE MATERIALIZED VIEW {} AS {} WITH DATA").format(ident, _body(model)))
        conn.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{model.name}_key"), ident, sql.SQL(", ").join(map(sql.Identifier, model.key))))
        _set_comment(conn, model, "MATERIALIZED VIEW")
    return Built(_count(conn, ident), model.relation), dropped


def build_function(conn: Conn, model: Model) -> Built:
    conn.execute(sql.SQL(model.sql))  # DDL file, run as written
    return Built(None, model.relation)


def _set_window(conn: Conn, start: datetime | None, end: datetime) -> None:
    """What an aggregating model reads as its window, for this transaction only."""
    conn.execute("SELECT set_config('bronzeline.window_start', %s, true), "
                 "set_config('bronzeline.window_end', %s, true)",
                 ("-infinity" if start is None else start.isoformat(), end.isoformat()))


def reads_window(model: Model) -> bool:
    """An aggregating incremental model reads its window itself (current_setting('bronzeline.window_…'))."""
    return "bronzeline.window_" in model.sql


def build_incremental(conn: Conn, model: Model, models: set[str], start: datetime | None, end: datetime,
                      *, full_refresh: bool) -> tuple[Built, list[str]]:
    """Merge on `key` the rows in (start, end]; the first build (or a full refresh) reads (-infinity, end]."""
    ident = _ident(model)
    _set_window(conn, None, end)  # an aggregating model's SELECT reads it even to be described
    exists, dropped = _table_or_rebuild(conn, model, models)
    kind = "r" if exists else None
    if kind is None or full_refresh:
        start = None
    _set_window(conn, start, end)
    query = _body(model)
    if not reads_window(model):
        # Literals, not parameters: the user's SQL may hold a `%` (modulo) that placeholders would take.
        bound = sql.SQL("q.{wm} <= {end}") if start is None else sql.SQL("q.{wm} > {start} AND q.{wm} <= {end}")
        query = sql.SQL("SELECT * FROM ({}\n) AS q WHERE {}").format(query, bound.format(
            wm=sql.Identifier(model.watermark or ""), start=sql.Literal(start), end=sql.Literal(end)))
    key = sql.SQL(", ").join(map(sql.Identifier, model.key))
    if kind is None:
        rows = _execute_count(conn, sql.SQL("CREATE TABLE {} AS {}").format(ident, query))
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(ident, key))
        _set_comment(conn, model, "TABLE")
        return Built(rows, model.relation, None, end), dropped
    if full_refresh:
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))
    stage = sql.Identifier(_STAGE)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(stage, query))
    cols = [name for name, _ in _table_columns(conn, model)]
    others = [c for c in cols if c not in model.key]
    action: sql.Composable = sql.SQL("DO NOTHING") if not others else sql.SQL("DO UPDATE SET {}").format(
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others))
    idents = sql.SQL(", ").join(map(sql.Identifier, cols))
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                ident, idents, idents, stage, key, action))
            merged = int(cur.rowcount)
    except psycopg.errors.CardinalityViolation:
        raise BuildError(f"{model.relation}: the window's rows hold one key ({', '.join(model.key)}) twice; make the "
                         "model's key unique") from None
    return Built(merged, model.relation, start, end, f"pg_temp.{_STAGE}"), dropped


_KINDS = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "p": "TABLE"}
