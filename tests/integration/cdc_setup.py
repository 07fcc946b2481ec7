"""A cdc pipeline: a published source table, a login with REPLICATION, a slot of the test's own (slots are
cluster-wide), dropped at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.integration.pipeline import Pipeline, table_digest


@contextmanager
def cdc_pipeline(pipe: Pipeline, ddl: str, tables: list[str], tables_yaml: str, extra_yaml: str = ""
                 ) -> Iterator[Pipeline]:
    slot = f"bl_{uuid.uuid4().hex[:12]}"
    reader = str(conninfo_to_dict(pipe.source_dsn)["user"])
    with pipe.src() as conn:
        conn.execute(ddl)
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(slot), sql.SQL(", ").join(sql.Identifier("tracksolid", t) for t in tables)))
        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA tracksolid TO {}").format(sql.Identifier(reader)))
    pipe.write_config(tables_yaml, f"cdc:\n  slot: {slot}\n  publication: {slot}\n  poll_interval: 0.2s\n"
                                   f"{extra_yaml}")
    pipe.cli("migrate", check=True)
    try:
        yield pipe
    finally:
        drop_slots(pipe)


def drop_slots(pipe: Pipeline) -> None:
    with pipe.src() as conn:
        for _ in range(50):
            try:
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE database = current_database()")
                return
            except psycopg.errors.ObjectInUse:  # a killed process's session has not ended yet
                conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                             "WHERE database = current_database() AND active_pid IS NOT NULL")
                conn.execute("SELECT pg_sleep(0.1)")


def rows(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def waiting_in_slot(conn: psycopg.Connection[Any]) -> int:
    """What the test database's slot still holds unconfirmed: 0 once bronzeline has caught up and moved it
    on. (Bytes behind the server's WAL position would also count other databases' writes — the warehouse's,
    other tests' — which only a later heartbeat confirms.)"""
    slot = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
                        ).fetchone()
    assert slot is not None, "the test database has no slot"
    row = conn.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
                       "'proto_version', '1', 'publication_names', %s)", (slot[0], slot[0])).fetchone()
    return int(row[0]) if row else 0


def settled_after_kill(pipe: Pipeline) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Once the runs after a kill are done: the source's trips and bronze's agree, every loaded run is
    accounted, the slot has moved on past every applied change. Returns the history's (op, count) rows and
    the loaded runs' (status, rows_extracted, rows_loaded, rows_skipped) for the test's own counts."""
    with pipe.src() as src, pipe.wh() as wh:
        assert table_digest(src, "tracksolid.trips") == table_digest(wh, "bronze.trips")
        history = rows(wh, "SELECT op, count(*) FROM bronze.trips__changes GROUP BY op ORDER BY op")
        runs = rows(wh, "SELECT status, rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs")
        waiting = waiting_in_slot(src)
    assert all(r[1] == r[2] + r[3] for r in runs if r[0] == "loaded")
    assert waiting == 0  # the slot moved on past every applied change
    return history, [r for r in runs if r[0] == "loaded"]
