"""The snapshot exported with a slot's creation: the first load of cdc tables is copied inside it, so the copy
and the slot's stream meet exactly (nothing missed, nothing twice)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import CdcUnavailable
from bronzeline.sources.base import Column, Window
from bronzeline.sources.cdc.changes import parse_lsn
from bronzeline.sources.postgres import CopyStream, PostgresSource

if TYPE_CHECKING:
    from bronzeline.sources.cdc.slot import ChangeSource


@dataclass(frozen=True)
class SlotSnapshot:
    """The snapshot exported when a slot was created: every transaction with a commit LSN below
    `consistent_lsn` is in it, every later one is in the slot's stream. Usable while the `with` block of
    create_slot()/snapshot_alone() is open."""

    slot: str
    consistent_lsn: int
    snapshot_name: str
    temporary: bool

    @property
    def through_lsn(self) -> int:
        """The last commit LSN the snapshot covers, for "commit LSN <= stored LSN: already applied": a commit
        record may start exactly at consistent_lsn, and that transaction is not in the snapshot."""
        return self.consistent_lsn - 1

    def includes(self, commit_lsn: int) -> bool:
        return commit_lsn < self.consistent_lsn

    def extract(self, source: PostgresSource, table: TableConfig, columns: list[Column]) -> CopyStream:
        """The table's CSV chunks exactly as `source.extract(table, columns, Window(None, None))` gives
        them, read inside this snapshot (`source` must be a connection to the slot's database)."""
        return source.extract(table, columns, Window(None, None), snapshot=self.snapshot_name)

    def transaction(self, source: PostgresSource) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A read-only transaction on `source` inside this snapshot, for reads of one's own (chunked copies)."""
        return source.in_snapshot(self.snapshot_name)


@contextlib.contextmanager
def exported_snapshot(source: ChangeSource, slot: str, temporary: bool) -> Iterator[SlotSnapshot]:
    """CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT on a replication connection kept open (and idle: any
    other command would end the snapshot) for the block; closing it ends the snapshot (and drops a
    temporary slot)."""
    conn = source._replication_connection()
    source._replication = conn
    try:
        command = sql.SQL("CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput EXPORT_SNAPSHOT").format(
            sql.Identifier(slot), sql.SQL("TEMPORARY " if temporary else ""))
        with conn.lock:  # a replication command goes through the simple query protocol, past psycopg's methods
            res = conn.pgconn.exec_(command.as_bytes(conn))
        if res.status != pq.ExecStatus.TUPLES_OK:
            exc = psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
            if exc.sqlstate == "42710":  # duplicate_object
                raise CdcUnavailable(f"source {source.name!r}: a replication slot named {slot!r} already exists; "
                                     "bronzeline uses it as is, or `bronzeline resync` replaces it")
            raise source._failure(exc, "creating the slot")
        values = {(res.fname(i) or b"").decode(): (res.get_value(0, i) or b"").decode() for i in range(res.nfields)}
        yield SlotSnapshot(slot=slot, consistent_lsn=parse_lsn(values["consistent_point"]),
                           snapshot_name=values["snapshot_name"], temporary=temporary)
        if temporary:  # dropped now rather than by the server some moment after the connection closes
            with conn.lock:
                conn.pgconn.exec_(sql.SQL("DROP_REPLICATION_SLOT {}").format(sql.Identifier(slot)).as_bytes(conn))
    finally:
        source._replication = None
        conn.close()
