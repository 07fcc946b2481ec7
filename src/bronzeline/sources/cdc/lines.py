"""Reading a page of pgoutput messages straight into COPY text lines, one local file per table: the hot path
of a slot read, without a Change object per change (docs/cdc.md, "Each page").

A line (PostgreSQL's COPY text format: tab-separated, `\\N` for NULL, backslash escapes) is one change:
`op` (I, U, D, T), `commit_lsn`, `seq` (order within the transaction), `commit_time`, `unchanged` (a text[]
of the columns whose value is an unchanged TOAST value), the table's columns (the new row; a delete's key,
its other columns NULL) and `__old_<key>` (the old key: of a delete, and of an update that moves the row to
another key; NULL otherwise). pgoutput sends values in text form, so a value's bytes are copied as they are;
they are escaped only when the tuple holds a backslash, tab, newline or carriage return.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import IO

from bronzeline.errors import ChangeDecodeError
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Relation, SpooledPage, TableLines, lsn_text
from bronzeline.sources.cdc.pgoutput import Decoder, pg_time

LINE_META = ("op", "commit_lsn", "seq", "commit_time", "unchanged")
OLD_PREFIX = "__old_"
NULL = b"\\N"
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_U32 = struct.Struct(">I")
_SPECIAL = b"\\\t\n\r"  # the bytes COPY text escapes
_FLUSH_LINES = 4096  # a table's lines of the current transaction kept in memory before they go to its file


def escape(value: bytes) -> bytes:
    return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def copy_join(parts: list[bytes], nulls: int) -> bytes:
    """The values as one COPY text field list. `nulls`: how many parts are the NULL object (by identity). The
    separators and NULLs account for len(parts) - 1 + nulls special bytes; any more means some value has a
    backslash, tab, newline or CR, and the values are escaped one by one (one C pass in the common case)."""
    text = b"\t".join(parts)
    if len(text) - len(text.translate(None, _SPECIAL)) != len(parts) - 1 + nulls:
        text = b"\t".join([p if p is NULL else escape(p) for p in parts])
    return text


def array_element(name: str) -> bytes:
    """A column name as an element of a text[] literal, escaped for COPY text."""
    return escape(('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"').encode())


class LineShape:
    """A relation as the line writer needs it: column count, key positions, names as text[] elements."""

    __slots__ = ("elements", "key_pos", "names", "ncols", "no_old", "no_old_tail", "special")

    def __init__(self, names: list[str], key: list[str]) -> None:
        self.names = names
        self.ncols = len(names)
        self.key_pos = [names.index(k) if k in names else -1 for k in key]
        self.elements = [array_element(n) for n in names]
        self.no_old = b"\t".join([NULL] * len(key))
        self.no_old_tail = b"\t" + self.no_old + b"\n"
        self.special = self.ncols - 1  # separators in a values text

    def unchanged(self, marked: list[int] | None) -> bytes:
        if not marked:
            return b"{}"
        return b"{" + b",".join([self.elements[i] for i in marked]) + b"}"

    def key_parts(self, parts: list[bytes]) -> list[bytes]:
        return [parts[i] if i >= 0 else NULL for i in self.key_pos]


def format_line(op: bytes, lsn_tab: bytes, seq: int, tab_time_tab: bytes, unchanged: bytes, values: bytes,
                old: bytes) -> bytes:
    return b"%b\t%b%d%b%b\t%b\t%b\n" % (op, lsn_tab, seq, tab_time_tab, unchanged, values, old)


def tuple_parts(data: bytes, pos: int, ncols: int) -> tuple[list[bytes], list[int] | None, int, int]:
    """TupleData → (the values as bytes, NULL for 'n' and 'u'; the positions of 'u' values; the count of NULL
    parts; the position after the tuple). The hot loop of a slot read."""
    if (data[pos] << 8 | data[pos + 1]) != ncols:
        raise ChangeDecodeError(f"a tuple has {data[pos] << 8 | data[pos + 1]} columns, its relation {ncols}")
    pos += 2
    parts: list[bytes] = []
    append = parts.append
    length = _U32.unpack_from  # one C call: cheaper than assembling the four bytes in Python
    marked: list[int] | None = None
    nulls = 0
    for i in range(ncols):
        kind = data[pos]
        if kind == 0x74:  # 't'
            start = pos + 5
            pos = start + length(data, pos + 1)[0]
            append(data[start:pos])
        elif kind == 0x6E:  # 'n'
            append(NULL)
            nulls += 1
            pos += 1
        elif kind == 0x75:  # 'u'
            append(NULL)
            nulls += 1
            pos += 1
            if marked is None:
                marked = [i]
            else:
                marked.append(i)
        else:
            raise ChangeDecodeError(f"column {i + 1} has tuple data kind {chr(kind)!r}; binary values were not "
                                    "asked for")
    if pos > len(data):
        raise ChangeDecodeError(f"a tuple ends {pos - len(data)} bytes past the end of its message")
    return parts, marked, nulls, pos


class _Out:
    """One table's line file while the page is read; the current transaction's lines wait in `buf` (and, past
    _FLUSH_LINES, in the file after `mark`) until its commit."""

    __slots__ = ("buf", "fh", "lines", "mark", "shape", "txn_rows")

    def __init__(self, lines: TableLines, shape: LineShape) -> None:
        self.lines = lines
        self.shape = shape
        self.fh: IO[bytes] = open(lines.path, "wb")  # noqa: SIM115 - closed by finish()
        self.buf: list[bytes] = []
        self.mark = -1
        self.txn_rows = 0

    def spill(self) -> None:
        if self.mark < 0:
            self.mark = self.fh.tell()
        self.fh.write(b"".join(self.buf))
        self.buf.clear()

    def commit(self, lsn: int) -> None:
        if self.buf:
            self.fh.write(b"".join(self.buf))
            self.buf.clear()
        self.lines.rows += self.txn_rows
        self.lines.txns.append((lsn, self.txn_rows))
        self.txn_rows = 0
        self.mark = -1

    def rollback(self) -> None:
        self.buf.clear()
        if self.mark >= 0:
            self.fh.seek(self.mark)
            self.fh.truncate()
        self.txn_rows = 0
        self.mark = -1


def spool_page(stream: Iterable[tuple[bytes]], decoder: Decoder, max_changes: int, after_lsn: int | None,
               wanted: set[tuple[str, str]] | None, folder: Path, server_limit: int | None = None) -> SpooledPage:
    """The first page of spool_pages (the rest of the stream is left unread)."""
    pages = spool_pages(stream, decoder, max_changes, after_lsn, wanted, folder, server_limit)
    try:
        return next(pages)
    finally:
        pages.close()


def spool_pages(stream: Iterable[tuple[bytes]], decoder: Decoder, max_changes: int, after_lsn: int | None,
                wanted: set[tuple[str, str]] | None, folder: Path, server_limit: int | None = None
                ) -> Generator[SpooledPage, None, None]:
    """The peek's rows as pages of line files under `folder` (see ChangeSource.read_pages): a page ends with
    the transaction that brings it to `max_changes` changes, and the next page goes on with the same stream.
    Changes of tables not in `wanted` count towards the page but are not written. `server_limit`: the row
    limit the peek was given (when the server stopped there, more may be waiting)."""
    page = SpooledPage()
    outs: dict[tuple[str, str], _Out] = {}
    targets: dict[int, _Out | None] = {}  # relation oid → its table's file (None: not wanted)
    touched: list[_Out] = []
    skipping = False
    txn_changes = 0
    commit_lsn = seq = rows = page_start = number = 0
    lsn_tab = tab_time_tab = insert_head = time_empty = b""
    commit_time = None
    unpack_u32 = _U32.unpack_from
    join_tab = b"\t".join

    def target(oid: int) -> _Out | None:
        if oid in targets:
            return targets[oid]
        relation = decoder.relations.get(oid)
        if relation is None:
            raise ChangeDecodeError(f"a change refers to relation oid {oid} before its Relation message")
        name = (relation.schema, relation.table)
        out = outs.get(name)
        if out is None and (wanted is None or name in wanted):
            names = [c.name for c in relation.columns]
            key = list(decoder.keys.get(name) or [c.name for c in relation.columns if c.is_key])
            lines = TableLines(relation, folder / f"{number}_{len(outs)}_{relation.table[:40]}.copy")
            out = outs[name] = _Out(lines, LineShape(names, key))
            page.tables[name] = lines
        targets[oid] = out
        return out

    def finish() -> SpooledPage:
        for out in touched:  # a transaction the page ends before
            out.rollback()
        touched.clear()
        for name, out in outs.items():
            out.fh.close()
            if out.lines.rows == 0:
                out.lines.path.unlink()
                del page.tables[name]
        return page

    stopped = False
    try:
        for (data,) in stream:
            rows += 1
            kind = data[0]
            if kind in (0x49, 0x55, 0x44):  # 'I', 'U', 'D'
                if skipping:
                    continue
                txn_changes += 1
                (oid,) = unpack_u32(data, 1)
                out = targets[oid] if oid in targets else target(oid)
                seq += 1
                if out is None:
                    continue
                shape = out.shape
                ncols = shape.ncols
                if kind == 0x49:  # the hot path: copy_join and format_line inlined
                    if data[5] != 0x4E:
                        raise ChangeDecodeError(f"insert without a new tuple ({data[5:6]!r})")
                    parts, _, nulls, _ = tuple_parts(data, 6, ncols)
                    values = join_tab(parts)
                    if len(values) - len(values.translate(None, _SPECIAL)) != shape.special + nulls:
                        values = copy_join(parts, nulls)
                    line = b"%b%d%b%b%b" % (insert_head, seq - 1, time_empty, values, shape.no_old_tail)
                elif kind == 0x55:
                    pos = 5
                    old: list[bytes] | None = None
                    if data[5] in (0x4B, 0x4F):  # the old key ('K') or the whole old row ('O': identity FULL)
                        old, _, _, pos = tuple_parts(data, 6, ncols)
                    if data[pos] != 0x4E:
                        raise ChangeDecodeError(f"update without a new tuple ({data[pos:pos + 1]!r})")
                    parts, marked, nulls, _ = tuple_parts(data, pos + 1, ncols)
                    old_text = shape.no_old
                    if old is not None:
                        old_key = shape.key_parts(old)
                        if old_key != shape.key_parts(parts):
                            if marked:  # its unchanged values live under the old key: the planner's case
                                page.stop_before_transaction()
                                stopped = True
                                break
                            out.lines.moved = True
                            old_text = copy_join(old_key, sum(1 for p in old_key if p is NULL))
                    if marked:
                        out.lines.unchanged.update(shape.names[i] for i in marked)
                    line = format_line(b"U", lsn_tab, seq - 1, tab_time_tab, shape.unchanged(marked),
                                       copy_join(parts, nulls), old_text)
                else:
                    if data[5] not in (0x4B, 0x4F):
                        raise ChangeDecodeError(f"delete without an old key ({data[5:6]!r})")
                    old, _, _, _ = tuple_parts(data, 6, ncols)
                    old_key = shape.key_parts(old)
                    key_text = copy_join(old_key, sum(1 for p in old_key if p is NULL))
                    deleted = [NULL] * ncols
                    for i, value in zip(shape.key_pos, old_key, strict=True):
                        if i >= 0:
                            deleted[i] = value
                    line = format_line(b"D", lsn_tab, seq - 1, tab_time_tab, b"{}",
                                       copy_join(deleted, sum(1 for p in deleted if p is NULL)), key_text)
                if out.txn_rows == 0:
                    touched.append(out)
                out.txn_rows += 1
                buf = out.buf
                buf.append(line)
                if len(buf) >= _FLUSH_LINES:
                    out.spill()
            elif kind == 0x42:  # 'B'
                commit_lsn, ts, _ = _BEGIN.unpack_from(data, 1)
                skipping = after_lsn is not None and commit_lsn <= after_lsn
                seq = txn_changes = 0
                commit_time = pg_time(ts)
                lsn_tab = lsn_text(commit_lsn).encode() + b"\t"
                tab_time_tab = b"\t" + commit_time.isoformat().encode() + b"\t"
                insert_head = b"I\t" + lsn_tab
                time_empty = tab_time_tab + b"{}\t"
            elif kind == 0x43:  # 'C'
                _, commit_lsn, _, _ = _COMMIT.unpack_from(data, 1)
                page.end_lsn = commit_lsn
                page.messages = rows - page_start
                if not skipping:
                    for out in touched:
                        out.commit(commit_lsn)
                        out.lines.last_commit_time = commit_time
                    touched.clear()
                    page.changes += txn_changes
                    page.transactions += 1
                    page.last_commit_time = commit_time
                if page.changes >= max_changes:  # the page is full: the next one goes on with the stream
                    page.caught_up = False
                    full = finish()
                    page, outs, targets = SpooledPage(), {}, {}
                    page_start, number = rows, number + 1
                    yield full  # the caller owns it now
            elif kind == 0x54:  # 'T'
                if skipping:
                    continue
                (count,) = unpack_u32(data, 1)
                txn_changes += count
                for n in range(count):
                    (oid,) = unpack_u32(data, 6 + 4 * n)
                    out = targets[oid] if oid in targets else target(oid)
                    if out is not None:
                        out.lines.truncate = True
                        shape = out.shape
                        if out.txn_rows == 0:
                            touched.append(out)
                        out.txn_rows += 1
                        out.buf.append(format_line(b"T", lsn_tab, seq + n, tab_time_tab, b"{}",
                                                   b"\t".join([NULL] * shape.ncols), shape.no_old))
                seq += count
            elif kind == 0x52:  # 'R'
                relation = decoder.decode(data)
                assert isinstance(relation, Relation)
                name = (relation.schema, relation.table)
                targets = {oid: out for oid, out in targets.items() if oid != relation.oid}
                held = page.tables.get(name)
                if held is not None and held.relation.columns != relation.columns:
                    # a second shape of a table already in the page: the page ends before this transaction,
                    # or, inside a page's first transaction, only the planner can follow it
                    page.stop_before_transaction()
                    stopped = True
                    break
            else:
                decoder.decode(data)  # Origin, Type, logical Message: nothing to write; raises on unknown types
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        for out in outs.values():
            out.fh.close()
        page.discard()
        raise ChangeDecodeError(f"cannot decode a pgoutput message: {exc}; the slot was read with an unexpected "
                                "protocol") from None
    except BaseException:  # also GeneratorExit: the reader stopped early
        for out in outs.values():
            out.fh.close()
        page.discard()
        raise
    finish()
    if not stopped and rows >= (server_limit or max_changes):
        page.caught_up = False  # the server stopped at the limit: more may be waiting
    if page.end_lsn is not None or number == 0 or page.needs_planner:
        yield page


def _text(value: object) -> bytes:
    return escape(value.encode()) if isinstance(value, str) else NULL


def lines_of_changes(changes: Sequence[Change], relation: Relation, key: list[str], path: Path) -> TableLines | None:
    """Change objects (a page read by read_page) as the same line file; None when only the planner can apply
    them: a key change carrying an unchanged value, or a change that lacks a column of the relation."""
    names = [c.name for c in relation.columns]
    shape = LineShape(names, key)
    lines = TableLines(relation, path)
    txn_lsn, txn_rows = -1, 0
    with open(path, "wb") as fh:
        for change in changes:
            if change.commit_lsn != txn_lsn:
                if txn_rows:
                    lines.txns.append((txn_lsn, txn_rows))
                txn_lsn, txn_rows = change.commit_lsn, 0
            new = change.new or {}
            values = [NULL] * len(names)
            old = shape.no_old
            unchanged: list[int] = []
            if change.op in ("I", "U"):
                if any(n not in new for n in names):
                    return None
                values = [_text(new[n]) for n in names]
                unchanged = [i for i, n in enumerate(names) if new[n] is UNCHANGED]
                old_key = [change.old_key.get(k) for k in key] if change.old_key is not None else None
                if old_key is not None and old_key != [new.get(k) for k in key]:
                    if unchanged:
                        return None
                    lines.moved = True
                    old = b"\t".join(_text(v) for v in old_key)
                lines.unchanged.update(names[i] for i in unchanged)
            elif change.op == "D":
                old_values = [(change.old_key or {}).get(k) for k in key]
                old = b"\t".join(_text(v) for v in old_values)
                for i, value in zip(shape.key_pos, old_values, strict=True):
                    if i >= 0:
                        values[i] = _text(value)
            else:
                lines.truncate = True
            fh.write(format_line(change.op.encode(), lsn_text(change.commit_lsn).encode() + b"\t", change.seq,
                                 b"\t" + change.commit_time.isoformat().encode() + b"\t", shape.unchanged(unchanged),
                                 b"\t".join(values), old))
            txn_rows += 1
            lines.rows += 1
            lines.last_commit_time = change.commit_time
    if txn_rows:
        lines.txns.append((txn_lsn, txn_rows))
    return lines
