"""The CDC slot reader against a real PostgreSQL with wal_level=logical: snapshot + stream = the table exactly
(under a concurrent writer), decoded values and old keys, unchanged TOAST, bounded pages of whole transactions,
peek until advance, heartbeats on an idle slot, a dropped slot, one consumer per slot, missing privileges."""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bronzeline.config.models import ConnectionConfig, TableConfig
from bronzeline.errors import CdcUnavailable, SlotBusy, SlotLost
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Page
from bronzeline.sources.cdc.slot import ChangeSource
from bronzeline.sources.postgres import PostgresSource
from tests.conftest import Databases, dsn_for


@dataclass
class Cdc:
    admin: str  # superuser on the test database
    dsn: str  # a non-superuser login with REPLICATION
    slot: str
    publication: str = "pub"
    opened: list[ChangeSource] | None = None

    def conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin, autocommit=True)

    def source(self, *, superuser: bool = False, dsn: str | None = None, slot: str | None = None) -> ChangeSource:
        cs = ChangeSource("source", ConnectionConfig(dsn=dsn or (self.admin if superuser else self.dsn)),
                          slot or self.slot, self.publication)
        assert self.opened is not None
        self.opened.append(cs)
        return cs


@pytest.fixture
def cdc(pg_admin_dsn: str, new_database: Databases) -> Iterator[Cdc]:
    admin = new_database(postgis=False)
    name = psycopg.conninfo.conninfo_to_dict(admin)["dbname"]
    role, password = f"bl_cdc_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        # writes in these tests are read back at once; a slot is read only up to the flushed WAL
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(str(name))))
        conn.execute("CREATE TABLE fleet (id int PRIMARY KEY, name text, n int)")
        conn.execute("CREATE TABLE pair (a int, b text, v numeric(5,2), at timestamptz, PRIMARY KEY (a, b))")
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, title text, body text)")
        conn.execute("CREATE PUBLICATION pub FOR TABLE fleet, pair, doc")
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    state = Cdc(admin=admin, dsn=dsn_for(admin, user=role, password=password), slot=f"bl_test_{uuid.uuid4().hex[:10]}",
                opened=[])
    try:
        yield state
    finally:
        for cs in state.opened or []:
            cs.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = current_database() AND NOT temporary")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def drain(cs: ChangeSource, max_changes: int = 1000) -> list[Change]:
    """Every change waiting in the slot, page by page, advancing after each page."""
    out: list[Change] = []
    while True:
        page = cs.read_page(max_changes)
        out += page.changes
        if page.end_lsn is not None:
            cs.advance(page.end_lsn)
        if page.caught_up:
            return out


def test_snapshot_and_stream_equal_the_table_under_a_concurrent_writer(cdc: Cdc) -> None:
    """The exported snapshot plus the changes after it = the table, no row missed or doubled, while a writer
    inserts, updates and deletes throughout (a non-superuser login with REPLICATION)."""
    with cdc.conn() as conn:
        conn.execute("INSERT INTO fleet SELECT g, 'r' || g, 0 FROM generate_series(1, 500) g")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with cdc.conn() as conn:
            i = 1000
            while not stop.is_set():
                i += 1
                with conn.transaction():
                    conn.execute("INSERT INTO fleet VALUES (%s, %s, 0)", (i, f"w{i}"))
                    conn.execute("UPDATE fleet SET n = n + 1, name = name || '+' WHERE id = %s", (i % 500 + 1,))
                    conn.execute("DELETE FROM fleet WHERE id = %s", (i - 7,))
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:
            time.sleep(0.01)
        cs = cdc.source()
        src = PostgresSource("source", ConnectionConfig(dsn=cdc.dsn))
        table = TableConfig.model_validate({"name": "fleet", "from": "public.fleet", "key": ["id"], "mode": "cdc"})
        with cs.create_slot() as snap:
            assert snap.consistent_lsn > 0 and snap.snapshot_name and not snap.temporary
            at_creation = written[0]
            stream = snap.extract(src, table, src.describe(table))
            text = b"".join(stream).decode()
            assert stream.rows is not None and stream.rows > 0
        while written[0] < at_creation + 30:  # the writer goes on after the snapshot
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
        src.close()
    rows: dict[str, dict[str, str | None]] = {
        r[0]: {"id": r[0], "name": r[1], "n": r[2]} for r in csv.reader(io.StringIO(text))}
    for change in drain(cs, max_changes=50):
        assert change.commit_lsn >= snap.consistent_lsn
        if change.op == "I":
            assert change.new is not None
            assert change.new["id"] not in rows, f"insert of a row already in the snapshot: {change}"
            rows[str(change.new["id"])] = {k: v for k, v in change.new.items() if isinstance(v, str | None)}
        elif change.op == "U":
            assert change.new is not None and change.new["id"] in rows, f"update of a row never seen: {change}"
            rows[str(change.new["id"])] = {k: v for k, v in change.new.items() if isinstance(v, str | None)}
        elif change.op == "D":
            assert change.old_key is not None
            assert rows.pop(str(change.old_key["id"]), None) is not None, f"delete of a row never seen: {change}"
    with cdc.conn() as conn:
        table_rows = {r[0]: {"id": r[0], "name": r[1], "n": r[2]}
                      for r in conn.execute("SELECT id::text, name, n::text FROM fleet")}
    assert rows == table_rows


def test_changes_are_decoded_with_values_and_old_keys(cdc: Cdc) -> None:
    cs = cdc.source(superuser=True)
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        conn.execute("SET TIME ZONE 'Africa/Nairobi'")
        with conn.transaction():
            conn.execute("INSERT INTO fleet VALUES (1, 'Nairobi ✓', NULL), (2, '', 5)")
            conn.execute("INSERT INTO pair VALUES (1, 'x', 1.5, '2024-03-01 10:00:00.123456+03')")
        conn.execute("UPDATE fleet SET name = 'Mombasa' WHERE id = 1")
        conn.execute("UPDATE fleet SET id = 3 WHERE id = 2")
        conn.execute("UPDATE pair SET a = 2, v = 2.25 WHERE a = 1")
        conn.execute("DELETE FROM pair WHERE a = 2 AND b = 'x'")
        conn.execute("DELETE FROM fleet WHERE id = 1")
    page = cs.read_page(100)
    got = [(c.op, c.table, c.seq, c.new, c.old_key) for c in page.changes]
    assert got == [
        ("I", "fleet", 0, {"id": "1", "name": "Nairobi ✓", "n": None}, None),
        ("I", "fleet", 1, {"id": "2", "name": "", "n": "5"}, None),
        ("I", "pair", 2, {"a": "1", "b": "x", "v": "1.50", "at": "2024-03-01 07:00:00.123456+00"}, None),
        ("U", "fleet", 0, {"id": "1", "name": "Mombasa", "n": None}, None),
        ("U", "fleet", 0, {"id": "3", "name": "", "n": "5"}, {"id": "2"}),
        ("U", "pair", 0, {"a": "2", "b": "x", "v": "2.25", "at": "2024-03-01 07:00:00.123456+00"},
         {"a": "1", "b": "x"}),
        ("D", "pair", 0, None, {"a": "2", "b": "x"}),
        ("D", "fleet", 0, None, {"id": "1"}),
    ]
    # one commit LSN per transaction, increasing; commit times from the source, in UTC
    lsns = [c.commit_lsn for c in page.changes]
    assert lsns[0] == lsns[1] == lsns[2] and lsns[2] < lsns[3] < lsns[4] < lsns[5] < lsns[6] < lsns[7]
    assert page.end_lsn == lsns[-1] and page.transactions == 6 and page.caught_up
    assert page.last_commit_time == page.changes[-1].commit_time
    assert set(page.relations) == {("public", "fleet"), ("public", "pair")}
    assert [c.is_key for c in page.relations[("public", "pair")].columns] == [True, True, False, False]


def test_unchanged_toast_value_is_unchanged(cdc: Cdc) -> None:
    cs = cdc.source(superuser=True)
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        # random text compresses poorly, so 4 kB of it is stored out of line (TOASTed)
        body = conn.execute("SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 128)").fetchone()
        assert body is not None and len(body[0]) == 4096
        conn.execute("INSERT INTO doc VALUES (1, 'draft', %s)", (body[0],))
        conn.execute("UPDATE doc SET title = 'final' WHERE id = 1")
        conn.execute("UPDATE doc SET body = 'short' WHERE id = 1")
    inserted, kept, replaced = cs.read_page(100).changes
    assert inserted.new == {"id": "1", "title": "draft", "body": body[0]}
    assert kept.new == {"id": "1", "title": "final", "body": UNCHANGED}  # never None: bronze keeps its value
    assert replaced.new == {"id": "1", "title": "final", "body": "short"}


def test_pages_hold_whole_transactions_peek_until_advance(cdc: Cdc) -> None:
    cs = cdc.source(superuser=True)
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        for i in range(3):  # three transactions of 4 changes
            conn.execute("INSERT INTO fleet SELECT g, 'a', %s FROM generate_series(%s::int, %s::int) g",
                         (i, i * 4, i * 4 + 3))
        conn.execute("INSERT INTO fleet SELECT g, 'big', 0 FROM generate_series(100, 124) g")  # 25 > max_changes
        conn.execute("INSERT INTO fleet VALUES (200, 'after', 0)")

    first = cs.read_page(10)
    assert [len(txn) for txn in transactions(first)] == [4, 4] and not first.caught_up  # a third would make 12
    again = cs.read_page(10)
    assert again.changes == first.changes and again.end_lsn == first.end_lsn  # peek: nothing consumed
    assert first.end_lsn is not None
    cs.advance(first.end_lsn)
    cs.advance(first.end_lsn)  # idempotent
    second = cs.read_page(10)
    assert [len(txn) for txn in transactions(second)] == [4] and not second.caught_up
    assert second.changes[0].commit_lsn > first.end_lsn
    assert second.end_lsn is not None
    cs.advance(second.end_lsn)
    big = cs.read_page(10)  # one transaction larger than the page: a page of its own, whole
    assert [len(txn) for txn in transactions(big)] == [25] and not big.caught_up
    assert big.end_lsn is not None
    cs.advance(big.end_lsn)
    last = cs.read_page(10)
    assert [c.new for c in last.changes] == [{"id": "200", "name": "after", "n": "0"}] and last.caught_up
    assert last.end_lsn is not None
    cs.advance(last.end_lsn)
    empty = cs.read_page(10)
    assert empty.changes == [] and empty.end_lsn is None and empty.caught_up


def test_a_page_has_one_shape_per_table(cdc: Cdc) -> None:
    """A column added at the source ends the page: the next page starts with the new shape."""
    cs = cdc.source(superuser=True)
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        conn.execute("INSERT INTO fleet VALUES (1, 'a', 0)")
        conn.execute("ALTER TABLE fleet ADD COLUMN note text")
        conn.execute("INSERT INTO fleet VALUES (2, 'b', 0, 'new')")
    before = cs.read_page(100)
    assert [c.new for c in before.changes] == [{"id": "1", "name": "a", "n": "0"}] and not before.caught_up
    assert [c.name for c in before.relations[("public", "fleet")].columns] == ["id", "name", "n"]
    assert before.end_lsn is not None
    cs.advance(before.end_lsn)
    after = cs.read_page(100)
    assert [c.new for c in after.changes] == [{"id": "2", "name": "b", "n": "0", "note": "new"}] and after.caught_up
    assert [c.name for c in after.relations[("public", "fleet")].columns] == ["id", "name", "n", "note"]


def test_a_replayed_page_is_skipped_but_still_advances(cdc: Cdc) -> None:
    cs = cdc.source(superuser=True)
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        conn.execute("INSERT INTO fleet VALUES (1, 'a', 0)")
        conn.execute("INSERT INTO fleet VALUES (2, 'b', 0)")
    page = cs.read_page(100)
    first_lsn = page.changes[0].commit_lsn
    # the warehouse committed the first transaction, then the process died before advance()
    replay = cs.read_page(100, after_lsn=first_lsn)
    assert [c.new["id"] for c in replay.changes if c.new] == ["2"] and replay.end_lsn == page.end_lsn
    done = cs.read_page(100, after_lsn=page.end_lsn)
    assert done.changes == [] and done.transactions == 0 and done.end_lsn == page.end_lsn
    assert done.end_lsn is not None
    cs.advance(done.end_lsn)
    assert cs.read_page(100).end_lsn is None


def test_heartbeat_moves_an_idle_slot(cdc: Cdc) -> None:
    cs = cdc.source()
    with cs.create_slot():
        pass
    with cdc.conn() as conn:  # WAL moves on for a table outside the publication: the slot cannot follow
        conn.execute("CREATE TABLE other (x int)")
        conn.execute("INSERT INTO other SELECT generate_series(1, 1000)")
    before = cs.health()
    assert before.exists and before.wal_status == "reserved" and before.confirmed_flush_lsn is not None
    assert cs.read_page(100).end_lsn is None
    cs.heartbeat()
    page = cs.read_page(100)
    assert page.changes == [] and page.end_lsn is not None and page.transactions == 1
    cs.advance(page.end_lsn)
    after = cs.health()
    assert after.confirmed_flush_lsn is not None and after.confirmed_flush_lsn > before.confirmed_flush_lsn
    # Confirmed past where the server's WAL stood before the heartbeat (other sessions of the cluster —
    # other tests — may write WAL meanwhile, so the lag itself proves nothing).
    assert before.current_lsn is not None and after.confirmed_flush_lsn >= before.current_lsn


def test_a_dropped_slot_is_slot_lost(cdc: Cdc) -> None:
    cs = cdc.source()
    assert not cs.slot_exists()
    with pytest.raises(SlotLost, match="resync"):
        cs.read_page(10)
    with cs.create_slot():
        pass
    assert cs.slot_exists()
    with cdc.conn() as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (cdc.slot,))
    with pytest.raises(SlotLost, match=r"bronzeline resync TABLE"):
        cs.read_page(10)
    with pytest.raises(SlotLost):
        cs.advance(1 << 40)
    health = cs.health()
    assert not health.exists and health.confirmed_flush_lsn is None and health.retained_bytes is None


def test_one_consumer_per_slot(cdc: Cdc) -> None:
    first = cdc.source()
    with first.create_slot():
        pass
    first.read_page(10)
    second = cdc.source()
    with pytest.raises(SlotBusy, match="another bronzeline process"):
        second.read_page(10)
    assert second.health().exists  # health needs no lock
    first.close()
    assert second.read_page(10).end_lsn is None


def test_a_failed_first_copy_drops_the_new_slot(cdc: Cdc) -> None:
    cs = cdc.source()
    with pytest.raises(RuntimeError), cs.create_slot():
        raise RuntimeError("the copy failed")
    assert not cs.slot_exists()


def test_a_table_snapshotted_alone_joins_the_stream(cdc: Cdc) -> None:
    """A temporary slot's snapshot at L: the main slot (behind L) gives the table's changes; those with commit
    LSN <= through_lsn are in the copy, the later ones are not."""
    cs = cdc.source()
    with cs.create_slot():
        pass
    with cdc.conn() as conn:
        conn.execute("INSERT INTO pair VALUES (1, 'a', 1, now())")
        src = PostgresSource("source", ConnectionConfig(dsn=cdc.dsn))
        table = TableConfig.model_validate({"name": "pair", "from": "public.pair", "key": ["a", "b"], "mode": "cdc"})
        with cs.snapshot_alone() as snap:
            assert snap.temporary and snap.slot != cdc.slot
            conn.execute("INSERT INTO pair VALUES (2, 'b', 2, now())")  # after the snapshot: not in the copy
            copied = b"".join(snap.extract(src, table, src.describe(table))).decode()
            assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                                (snap.slot,)).fetchone() == (1,)
        src.close()
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                            (snap.slot,)).fetchone() == (0,)
    assert [r[:2] for r in csv.reader(io.StringIO(copied))] == [["1", "a"]]
    changes = cs.read_page(100).changes
    assert [(c.new or {}).get("a") for c in changes] == ["1", "2"]
    assert [snap.includes(c.commit_lsn) for c in changes] == [True, False]
    assert [c.commit_lsn <= snap.through_lsn for c in changes] == [True, False]


def test_missing_replication_attribute_gives_the_fix(cdc: Cdc, pg_admin_dsn: str) -> None:
    role, password = f"bl_norepl_{uuid.uuid4().hex[:8]}", f"Pw{uuid.uuid4().hex}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        plain = cdc.source(dsn=dsn_for(cdc.admin, user=role, password=password))
        with pytest.raises(CdcUnavailable, match=rf"ALTER ROLE {role} REPLICATION"), plain.create_slot():
            pass
        plain.close()
        owner = cdc.source()
        with owner.create_slot():
            pass
        owner.close()
        plain = cdc.source(dsn=dsn_for(cdc.admin, user=role, password=password))
        with pytest.raises(CdcUnavailable, match=rf"ALTER ROLE {role} REPLICATION"):
            plain.read_page(10)
        plain.close()
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def transactions(page: Page) -> list[list[Change]]:
    out: dict[int, list[Change]] = {}
    for c in page.changes:
        out.setdefault(c.commit_lsn, []).append(c)
    return list(out.values())
