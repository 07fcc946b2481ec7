"""Reading a pgoutput logical replication slot over plain SQL: create it with an exported snapshot, peek
bounded pages of whole transactions, advance it only when told, report its health.

psycopg 3 has no streaming replication API, so the slot is read by polling
`pg_logical_slot_peek_binary_changes` (peek: reading never moves the slot; `advance()` does, after the
warehouse has committed). Slot creation goes through a `replication=database` connection, because only
CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT hands out a snapshot consistent with the slot's start.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg import sql

from bronzeline.config.models import ConnectionConfig
from bronzeline.connections import connect
from bronzeline.errors import (
    BronzelineError,
    CdcUnavailable,
    SlotBusy,
    SlotLost,
    SourceError,
    SourceUnreachable,
)
from bronzeline.redact import dsn_password, redact
from bronzeline.sources.cdc.changes import Change, Page, Relation, SlotHealth, SpooledPage, lsn_text, parse_lsn
from bronzeline.sources.cdc.health import read_slot_health
from bronzeline.sources.cdc.lines import spool_pages
from bronzeline.sources.cdc.pgoutput import Begin, Commit, Decoder, LogicalMessage, Truncated
from bronzeline.sources.cdc.snapshot import SlotSnapshot, exported_snapshot
from bronzeline.text import first_line

HEARTBEAT_PREFIX = "bronzeline"
DEFAULT_STATEMENT_TIMEOUT = "5min"  # a peek decodes from the slot's restart point; never let it hang for ever
LOCK_GRACE_SECONDS = 2.0  # how long a second consumer tries the slot's lock before SlotBusy
FETCH_ROWS = 2000  # rows per network round trip of a page's stream: client memory per fetch, not per backlog

_PEEK_SQL = ("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, 'proto_version', '1', "
             "'publication_names', %s, 'messages', 'true')")
_SLOT_SQL = """
SELECT pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, s.slot_type, s.plugin, s.database,
       s.active, s.wal_status, s.restart_lsn::text, s.confirmed_flush_lsn::text
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = %s
"""
_FACTS_SQL = """
SELECT current_setting('wal_level'), current_user, current_database(),
       (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),
       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)
"""
_LOCK_KEY = "bronzeline cdc slot "  # the advisory lock's key: hashtextextended of this + the slot name
_HOLDER_SQL = """
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = (%(key)s >> 32) & 4294967295 AND l.objid::bigint = %(key)s & 4294967295
LIMIT 1
"""


class ChangeSource:
    """One pgoutput slot on a PostgreSQL source, read by bounded SQL polling.

    One consumer per slot: read_page, advance, create_slot and drop_slot first take a session advisory
    lock on the source keyed by the slot name (non-blocking); a second process gets SlotBusy. health,
    heartbeat, slot_exists and snapshot_alone need no lock. `keys` ((schema, table) → key columns) narrows
    old_key to the table's key for tables with REPLICA IDENTITY FULL.
    """

    def __init__(self, name: str, cfg: ConnectionConfig, slot: str, publication: str, *,
                 keys: dict[tuple[str, str], tuple[str, ...]] | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.slot = slot
        self.publication = publication
        self.keys = keys or {}
        self._secret = dsn_password(cfg.dsn)
        settings = {"statement_timeout": cfg.statement_timeout or DEFAULT_STATEMENT_TIMEOUT,
                    "client_encoding": "UTF8"}
        self.conn = connect(name, cfg, SourceError, purpose="cdc", settings=settings)
        self._replication: psycopg.Connection[Any] | None = None
        self._locked = False

    # -- lifecycle
    def close(self) -> None:
        if self._replication is not None:
            self._replication.close()
        self.conn.close()  # releases the advisory lock with the session

    def cancel(self) -> None:
        """Cancel what is in flight (a peek, or a slot creation waiting for open transactions), from any thread."""
        for conn in (self.conn, self._replication):
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=2.0)

    # -- the slot
    def slot_exists(self) -> bool:
        return bool(self._slot_row()[1])

    @contextlib.contextmanager
    def create_slot(self) -> Iterator[SlotSnapshot]:
        """Create the slot and export its snapshot; the snapshot stays valid inside the `with` block. A block
        that raises drops the slot again: a slot whose snapshot was never copied would skip those rows."""
        self._require_cdc()
        self._lock()
        with self._exported(self.slot, temporary=False) as snap:
            try:
                yield snap
            except BaseException:
                with contextlib.suppress(BronzelineError, psycopg.Error):
                    self.conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                      "WHERE slot_name = %s", (self.slot,))
                raise

    @contextlib.contextmanager
    def snapshot_alone(self) -> Iterator[SlotSnapshot]:
        """A snapshot for one table joining the stream later: a temporary slot gives the LSN where the
        snapshot stands; the caller copies the table and stores `through_lsn` as its start, so the main
        slot (which is behind) skips that table's changes already in the copy. The temporary slot is
        dropped with its connection when the block ends."""
        self._require_cdc()
        temp = f"{self.slot[:40]}_t{uuid.uuid4().hex[:12]}"
        with self._exported(temp, temporary=True) as snap:
            yield snap

    def drop_slot(self) -> None:
        self._lock()
        try:
            self.conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                              "WHERE slot_name = %s", (self.slot,))
        except psycopg.Error as exc:
            raise self._failure(exc, "dropping the slot") from None

    def _exported(self, slot: str, *, temporary: bool) -> contextlib.AbstractContextManager[SlotSnapshot]:
        return exported_snapshot(self, slot, temporary)

    def _replication_connection(self) -> psycopg.Connection[Any]:
        return connect(self.name, self.cfg, SourceError, purpose="cdc slot", replication=True)

    # -- reading
    def read_page(self, max_changes: int, after_lsn: int | None = None) -> Page:
        """Whole transactions from the slot's confirmed position, without moving it.

        Bounded twice: in LSN (up to the WAL position read first) and in changes (the server stops decoding
        once it has returned `max_changes` rows, always at a transaction's end). A page holds at most
        `max_changes` changes, except that its first transaction is always taken whole, however large: a
        transaction bigger than the limit is a page of its own, so the stream always moves on (memory then
        follows the largest transaction, never the backlog: rows arrive in chunks of FETCH_ROWS).
        Transactions with commit LSN <= `after_lsn` (already applied: a replay after a crash between the
        warehouse commit and advance()) are skipped, but end_lsn covers them so advancing is still possible.
        A page is also cut before a transaction that brings a second shape of a table already in it (a
        column added at the source), so each page has one Relation per table. Logical messages (heartbeats)
        make their transaction count: a page of heartbeats has end_lsn and no changes.
        """
        self._lock()
        row = self._slot_row()
        self._require_slot(row)
        upto = str(row[0])
        page = Page()
        decoder = Decoder(self.keys)
        txn: list[Change] = []
        txn_relations: dict[tuple[str, str], Relation] = {}
        skipping = False
        rows = 0
        try:
            with self._peek(upto, max_changes) as stream:
                for (data,) in stream:
                    rows += 1
                    message = decoder.decode(data)
                    if isinstance(message, Change):
                        if not skipping:
                            txn.append(message)
                            name = (message.schema, message.table)
                            txn_relations[name] = decoder.by_name[name]
                    elif isinstance(message, Begin):
                        txn.clear()
                        txn_relations.clear()
                        skipping = after_lsn is not None and message.final_lsn <= after_lsn
                    elif isinstance(message, Commit):
                        if not skipping and page.transactions and (
                                len(page.changes) + len(txn) > max_changes
                                or _reshaped(page.relations, txn_relations)):
                            page.caught_up = False
                            break
                        page.end_lsn = message.commit_lsn
                        if not skipping:
                            page.changes.extend(txn)
                            page.relations.update(txn_relations)
                            page.last_commit_time = message.commit_time
                            page.transactions += 1
                        txn.clear()
                    elif isinstance(message, Truncated):
                        if not skipping:
                            txn.extend(message.changes)
                            for change in message.changes:
                                name = (change.schema, change.table)
                                txn_relations[name] = decoder.by_name[name]
                    elif isinstance(message, LogicalMessage):
                        pass  # a transactional heartbeat: its commit is the progress
        except psycopg.Error as exc:
            raise self._failure(exc, "reading the slot") from None
        if rows >= max_changes:
            page.caught_up = False  # the server stopped at the limit: more may be waiting
        return page

    def read_spooled(self, max_changes: int, folder: Path, after_lsn: int | None = None,
                     tables: set[tuple[str, str]] | None = None) -> SpooledPage:
        """The page read_page would return (ending with the transaction that reaches `max_changes`), written
        straight into one COPY text file per table under `folder` (sources/cdc/lines.py)."""
        pages = self.read_pages(max_changes, folder, after_lsn, tables)
        try:
            return next(pages)
        finally:
            pages.close()

    def read_pages(self, max_changes: int, folder: Path, after_lsn: int | None = None,
                   tables: set[tuple[str, str]] | None = None, *, pages: int = 1, skip_rows: int = 0
                   ) -> Generator[SpooledPage, None, None]:
        """Pages of line files from ONE peek of up to `pages` × `max_changes` changes (each peek makes the server
        decode again from the slot's restart point, so one large peek is cheaper than many small ones): a page
        ends with the transaction that brings it to `max_changes`, and is handed over while the rest of the peek
        is decoded. Memory does not follow the page's size. `tables` ((schema, table)): the tables to write; the
        others' changes still count towards the page. `skip_rows`: about how many rows the slot sends first
        that `after_lsn` skips (pages read ahead and not applied yet), so the server's limit leaves room."""
        self._lock()
        row = self._slot_row()
        self._require_slot(row)
        limit = min(max_changes * pages + skip_rows, 2**31 - 1)  # upto_nchanges is an integer
        try:
            with self._peek(str(row[0]), limit) as stream:
                yield from spool_pages(stream, Decoder(self.keys), max_changes, after_lsn, tables, folder, limit)
        except psycopg.Error as exc:
            raise self._failure(exc, "reading the slot") from None

    @contextlib.contextmanager
    def _peek(self, upto: str, max_changes: int) -> Iterator[Iterator[tuple[bytes]]]:
        publication = sql.Identifier(self.publication).as_string(self.conn)
        # closing(): leaving the loop early closes the stream at once, which cancels the server's output
        with self.conn.cursor(binary=True) as cur, contextlib.closing(cast(Generator[Any, None, None], cur.stream(
                _PEEK_SQL, (self.slot, upto, max_changes, publication), size=FETCH_ROWS))) as stream:
            yield stream

    def advance(self, lsn: int) -> None:
        """Move the slot past every transaction whose commit LSN is <= `lsn` (the slot's confirmed position
        becomes lsn + 1: PostgreSQL skips a transaction whose commit record starts before that position).
        Idempotent: a position the slot is already past is left alone."""
        self._lock()
        row = self._slot_row()
        self._require_slot(row)
        confirmed = parse_lsn(str(row[8])) if row[8] else 0
        target = lsn + 1
        if confirmed >= target:
            return
        try:
            self.conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, lsn_text(target)))
        except psycopg.Error as exc:
            raise self._failure(exc, "advancing the slot") from None

    def heartbeat(self) -> None:
        """A transactional logical message: the slot sees a commit even when no published table changes.
        Committed synchronously, so the next read sees it even on a source with synchronous_commit off
        (a slot is only read up to the flushed WAL)."""
        try:
            with self.conn.transaction():
                self.conn.execute("SET LOCAL synchronous_commit = on")
                self.conn.execute("SELECT pg_logical_emit_message(true, %s, 'heartbeat')", (HEARTBEAT_PREFIX,))
        except psycopg.Error as exc:
            raise self._failure(exc, "writing a heartbeat") from None

    def health(self) -> SlotHealth:
        try:
            return read_slot_health(self.conn, self.slot)
        except psycopg.Error as exc:
            raise self._failure(exc, "reading the slot's state") from None

    # -- checks and errors
    def _slot_row(self) -> tuple[Any, ...]:
        try:
            row = self.conn.execute(_SLOT_SQL, (self.slot,)).fetchone()
        except psycopg.Error as exc:
            raise self._failure(exc, "reading the slot's state") from None
        assert row is not None
        return tuple(row)

    def _require_slot(self, row: tuple[Any, ...]) -> None:
        _, exists, slot_type, plugin, database, _, wal_status, _, _ = row
        if not exists:
            raise self._lost("it does not exist (dropped)")
        if wal_status == "lost":
            raise self._lost("it was invalidated: it retained more WAL than max_slot_wal_keep_size allows")
        if slot_type != "logical" or plugin != "pgoutput" or database != self.conn.info.dbname:
            raise CdcUnavailable(
                f"source {self.name!r}: slot {self.slot!r} exists but is not a pgoutput slot of database "
                f"{self.conn.info.dbname!r} ({slot_type}, {plugin}, {database}); set `cdc.slot` to another name")

    def _lost(self, why: str) -> SlotLost:
        return SlotLost(f"source {self.name!r}: cdc slot {self.slot!r} is lost: {why}; the changes since the last "
                        "applied position cannot be read any more. Run `bronzeline resync TABLE…` for the cdc "
                        "tables (a new slot and snapshot; rows gone from the source are deleted)")

    def _facts(self) -> tuple[str, str, str, bool, bool]:
        row = self.conn.execute(_FACTS_SQL, (self.publication,)).fetchone()
        assert row is not None
        return str(row[0]), str(row[1]), str(row[2]), bool(row[3]), bool(row[4])

    def _require_cdc(self) -> None:
        """wal_level and the REPLICATION attribute, from the catalog, with the exact fix."""
        try:
            wal_level, user, _, can_replicate, _ = self._facts()
        except psycopg.Error as exc:
            raise self._failure(exc, "checking the source") from None
        problem = _cdc_problem(self.name, wal_level, user, can_replicate)
        if problem:
            raise CdcUnavailable(problem)

    def _failure(self, exc: psycopg.Error, doing: str) -> BronzelineError:
        """What a failed slot operation means, decided by SQLSTATE and the catalog, never by message text."""
        detail = redact(first_line(exc), [self._secret])
        state = exc.sqlstate
        if self.conn.closed or (state or "").startswith("08") or (
                state is None and isinstance(exc, psycopg.OperationalError)):
            return SourceUnreachable(f"source {self.name!r}: {doing} failed, the connection was lost ({detail}); "
                                     "run again when the source is back")
        if state == "57014":  # query_canceled: the statement timeout, or cancel(); terminal, like any timeout
            return SourceError(
                f"source {self.name!r}: {doing} was cancelled or took longer than the statement timeout "
                f"({self.cfg.statement_timeout or DEFAULT_STATEMENT_TIMEOUT}); lower `cdc.page_changes` or raise "
                "the connection's statement_timeout")
        try:
            wal_level, user, _, can_replicate, has_publication = self._facts()
            row = self._slot_row()
        except (psycopg.Error, BronzelineError):
            return SourceError(f"source {self.name!r}: {doing} failed: {detail}")
        problem = _cdc_problem(self.name, wal_level, user, can_replicate)
        if problem:
            return CdcUnavailable(problem)
        if not row[1]:
            return self._lost("it does not exist (dropped)")
        if row[6] == "lost":
            return self._lost("it was invalidated: it retained more WAL than max_slot_wal_keep_size allows")
        if exc.sqlstate == "55006":  # object_in_use: another session has the slot active
            return SlotBusy(f"source {self.name!r}: cdc slot {self.slot!r} is in use by another session; "
                            "one consumer per slot (stop the other `bronzeline stream`)")
        if not has_publication:
            return CdcUnavailable(
                f"source {self.name!r}: publication {self.publication!r} does not exist; a DBA must run "
                f"CREATE PUBLICATION {self.publication} FOR TABLE … (the cdc tables)")
        return SourceError(f"source {self.name!r}: {doing} failed: {detail}")

    def _lock(self) -> None:
        """The slot's session advisory lock on the source, without queueing behind a holder: tried for
        LOCK_GRACE_SECONDS only (a process that has just exited releases it when its backend is gone, a moment
        after its socket closes), then SlotBusy naming the holder's backend."""
        if self._locked:
            return
        deadline = time.monotonic() + LOCK_GRACE_SECONDS
        try:
            row = self.conn.execute("SELECT hashtextextended(%s, 0)", (_LOCK_KEY + self.slot,)).fetchone()
            assert row is not None
            key = int(row[0])
            while True:
                got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if got and got[0]:
                    self._locked = True
                    return
                if time.monotonic() >= deadline:
                    holder = self.conn.execute(_HOLDER_SQL, {"key": key}).fetchone()
                    break
                time.sleep(0.05)
        except psycopg.Error as exc:
            raise self._failure(exc, "locking the slot") from None
        who = f" (source backend pid {holder[0]})" if holder else ""
        raise SlotBusy(f"source {self.name!r}: cdc slot {self.slot!r} is read by another bronzeline process{who}; "
                       "one consumer per slot, so this one stops")


def _cdc_problem(source: str, wal_level: str, user: str, can_replicate: bool) -> str | None:
    if wal_level != "logical":
        return (f"source {source!r} has wal_level = {wal_level}; change data capture needs logical: a DBA must run "
                "ALTER SYSTEM SET wal_level = logical; and restart the server")
    if not can_replicate:
        return (f"source {source!r}: login {user!r} lacks the REPLICATION attribute that reading a slot needs; a "
                f"DBA must run ALTER ROLE {user} REPLICATION;")
    return None


def _reshaped(page: dict[tuple[str, str], Relation], txn: dict[tuple[str, str], Relation]) -> bool:
    """Whether the transaction brings a table whose columns differ from the page's shape of it."""
    return any(key in page and page[key].columns != rel.columns for key, rel in txn.items())
