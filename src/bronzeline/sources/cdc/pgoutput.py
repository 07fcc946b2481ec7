"""A decoder for pgoutput, PostgreSQL's logical replication output, protocol version 1.

What `pg_logical_slot_peek_binary_changes(…, 'proto_version', '1', …)` returns, one message per row:
Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate and logical Message. The
format is small and stable (PostgreSQL's "Logical Replication Message Formats"); values arrive in
PostgreSQL's text format and stay text here. Integers are big-endian; strings are NUL-terminated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bronzeline.errors import ChangeDecodeError
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Op, Relation, RelationColumn, Value

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # pgoutput's timestamps count microseconds from here

_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")  # final LSN, commit timestamp, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit LSN, end LSN, commit timestamp
_MESSAGE_HEAD = struct.Struct(">BQ")  # flags, LSN
_new = object.__new__
_KEY_FLAG = 1  # Relation column flag: part of the replica identity
_TRANSACTIONAL = 1  # Message flag


def pg_time(microseconds: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=microseconds)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # the end of the commit record
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class TypeInfo:
    oid: int
    schema: str
    name: str


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Truncated:
    changes: tuple[Change, ...]  # one 'T' change per truncated relation


Message = Begin | Commit | Origin | Relation | TypeInfo | Change | Truncated | LogicalMessage


class _Shape:
    """A relation as the hot path needs it: column names and where the key columns are."""

    __slots__ = ("key_names", "names", "relation")

    def __init__(self, relation: Relation, key: tuple[str, ...] | None) -> None:
        self.relation = relation
        self.names = tuple(c.name for c in relation.columns)
        flagged = tuple(c.name for c in relation.columns if c.is_key)
        # Identity FULL flags every column; the table's configured key says which of them identify the row.
        full = relation.replica_identity == "f"
        self.key_names = key if full and key and set(key) <= set(self.names) else flagged


class Decoder:
    """Decodes the messages of one slot read, in order. Keeps the relations (oid → shape) the stream
    announced, since pgoutput sends a Relation once per read before the first change of a table, and
    the current transaction's commit LSN, time and change counter for the Change objects.

    `keys` maps (schema, table) to the table's key: for replica identity FULL the old row carries every
    column, and old_key is narrowed to these; otherwise the relation's key flags decide.
    """

    def __init__(self, keys: dict[tuple[str, str], tuple[str, ...]] | None = None) -> None:
        self.keys = keys or {}
        self.relations: dict[int, Relation] = {}
        self.by_name: dict[tuple[str, str], Relation] = {}  # (schema, table) → its latest announced shape
        self.types: dict[int, TypeInfo] = {}
        self._shapes: dict[int, _Shape] = {}
        self.commit_lsn = 0
        self.commit_time = PG_EPOCH
        self.seq = 0

    def decode(self, data: bytes) -> Message:
        try:
            kind = data[0]
            if kind == 0x49:  # 'I'
                return self._insert(data)
            if kind == 0x55:  # 'U'
                return self._update(data)
            if kind == 0x44:  # 'D'
                return self._delete(data)
            if kind == 0x42:  # 'B'
                return self._begin(data)
            if kind == 0x43:  # 'C'
                _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
                return Commit(commit_lsn, end_lsn, pg_time(ts))
            if kind == 0x52:  # 'R'
                return self._relation(data)
            if kind == 0x4D:  # 'M'
                return self._message(data)
            if kind == 0x54:  # 'T'
                return self._truncate(data)
            if kind == 0x4F:  # 'O'
                (lsn,) = _U64.unpack_from(data, 1)
                name, _ = _cstring(data, 9)
                return Origin(lsn, name)
            if kind == 0x59:  # 'Y'
                (oid,) = _U32.unpack_from(data, 1)
                schema, pos = _cstring(data, 5)
                name, _ = _cstring(data, pos)
                info = TypeInfo(oid, schema, name)
                self.types[oid] = info
                return info
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            raise ChangeDecodeError(f"cannot decode a pgoutput message ({data[:1]!r}, {len(data)} bytes): "
                                    f"{exc}; the slot was read with an unexpected protocol") from None
        raise ChangeDecodeError(f"unknown pgoutput message type {data[:1]!r}; the slot must be read with "
                                "proto_version 1 and no streaming")

    # -- transaction framing
    def _begin(self, data: bytes) -> Begin:
        final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
        self.commit_lsn = final_lsn
        self.commit_time = pg_time(ts)
        self.seq = 0
        return Begin(final_lsn, self.commit_time, xid)

    def _message(self, data: bytes) -> LogicalMessage:
        flags, lsn = _MESSAGE_HEAD.unpack_from(data, 1)
        prefix, pos = _cstring(data, 10)
        (length,) = _U32.unpack_from(data, pos)
        content = bytes(data[pos + 4: pos + 4 + length])
        return LogicalMessage(bool(flags & _TRANSACTIONAL), lsn, prefix, content)

    # -- catalog
    def _relation(self, data: bytes) -> Relation:
        (oid,) = _U32.unpack_from(data, 1)
        schema, pos = _cstring(data, 5)
        table, pos = _cstring(data, pos)
        identity = chr(data[pos])
        (ncols,) = _I16.unpack_from(data, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = data[pos]
            name, pos = _cstring(data, pos + 1)
            (type_oid,) = _U32.unpack_from(data, pos)
            (typmod,) = _I32.unpack_from(data, pos + 4)
            pos += 8
            columns.append(RelationColumn(name, type_oid, typmod, bool(flags & _KEY_FLAG)))
        relation = Relation(oid, schema, table, identity, tuple(columns))
        self.relations[oid] = relation
        self.by_name[(schema, table)] = relation
        self._shapes[oid] = _Shape(relation, self.keys.get((schema, table)))
        return relation

    def _shape(self, oid: int) -> _Shape:
        shape = self._shapes.get(oid)
        if shape is None:
            raise ChangeDecodeError(f"a change refers to relation oid {oid} before its Relation message")
        return shape

    # -- changes
    def _change(self, op: Op, shape: _Shape, new: dict[str, Value] | None,
                old_key: dict[str, str | None] | None) -> Change:
        rel = shape.relation
        # Change is a frozen dataclass; its generated __init__ (a setattr per field) costs as much as decoding a
        # column. Filling the instance's __dict__ directly gives the same object at a third of the cost.
        change = _new(Change)
        change.__dict__.update(op=op, schema=rel.schema, table=rel.table, commit_lsn=self.commit_lsn,
                               commit_time=self.commit_time, seq=self.seq, new=new, old_key=old_key)
        self.seq += 1
        return change

    def _insert(self, data: bytes) -> Change:
        (oid,) = _U32.unpack_from(data, 1)
        shape = self._shape(oid)
        if data[5] != 0x4E:  # 'N'
            raise ChangeDecodeError(f"insert without a new tuple ({data[5:6]!r})")
        new, _ = _tuple(data, 6, shape.names)
        return self._change("I", shape, new, None)

    def _update(self, data: bytes) -> Change:
        (oid,) = _U32.unpack_from(data, 1)
        shape = self._shape(oid)
        pos = 5
        old_key = None
        if data[pos] in (0x4B, 0x4F):  # 'K' key columns only, 'O' the whole old row (identity FULL)
            old, pos = _tuple(data, pos + 1, shape.names)
            old_key = _key(old, shape.key_names)
        if data[pos] != 0x4E:
            raise ChangeDecodeError(f"update without a new tuple ({data[pos:pos + 1]!r})")
        new, _ = _tuple(data, pos + 1, shape.names)
        return self._change("U", shape, new, old_key)

    def _delete(self, data: bytes) -> Change:
        (oid,) = _U32.unpack_from(data, 1)
        shape = self._shape(oid)
        if data[5] not in (0x4B, 0x4F):
            raise ChangeDecodeError(f"delete without an old key ({data[5:6]!r})")
        old, _ = _tuple(data, 6, shape.names)
        return self._change("D", shape, None, _key(old, shape.key_names))

    def _truncate(self, data: bytes) -> Truncated:
        (count,) = _U32.unpack_from(data, 1)
        pos = 6  # after the count, one byte of options (CASCADE, RESTART IDENTITY)
        changes = []
        for _ in range(count):
            (oid,) = _U32.unpack_from(data, pos)
            pos += 4
            changes.append(self._change("T", self._shape(oid), None, None))
        return Truncated(tuple(changes))


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


def _tuple(data: bytes, pos: int, names: tuple[str, ...]) -> tuple[dict[str, Value], int]:
    """TupleData: Int16 count, then per column 'n' (null), 'u' (unchanged TOAST) or 't' + Int32 + text.
    The hot loop of a slot read: lengths are read byte by byte, values gathered in a list (cheaper here)."""
    if (data[pos] << 8 | data[pos + 1]) != len(names):
        raise ChangeDecodeError(f"a tuple has {_I16.unpack_from(data, pos)[0]} columns, its relation {len(names)}")
    pos += 2
    values: list[Value] = []
    append = values.append
    for name in names:
        kind = data[pos]
        if kind == 0x74:  # 't'
            start = pos + 5
            pos = start + (data[pos + 1] << 24 | data[pos + 2] << 16 | data[pos + 3] << 8 | data[pos + 4])
            append(data[start:pos].decode())
        elif kind == 0x6E:  # 'n'
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u'
            append(UNCHANGED)
            pos += 1
        else:
            raise ChangeDecodeError(f"column {name!r} has tuple data kind {chr(kind)!r}; binary values were not "
                                    "asked for")
    if pos > len(data):  # a slice past the end shortens silently: the message was cut
        raise ChangeDecodeError(f"a tuple ends {pos - len(data)} bytes past the end of its message")
    return dict(zip(names, values, strict=False)), pos  # the count was checked above


def _key(old: dict[str, Value], key_names: tuple[str, ...]) -> dict[str, str | None]:
    key: dict[str, str | None] = {}
    for name in key_names:
        value = old.get(name)
        if value is not UNCHANGED:  # a key column is never an unsent TOAST value; skip rather than guess
            key[name] = value if isinstance(value, str) else None
    return key
