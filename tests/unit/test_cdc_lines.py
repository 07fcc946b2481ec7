"""pgoutput messages decoded straight into COPY text lines (sources/cdc/lines.py): the layout, escaping of
tabs/newlines/backslashes (and nothing else: non-ASCII bytes pass as they are), unchanged TOAST markers, old
keys of deletes and key changes, the planner's cases flagged, pages cut at whole transactions, and Change
objects giving the same lines."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bronzeline.errors import ChangeDecodeError
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Relation, RelationColumn, lsn_text
from bronzeline.sources.cdc.lines import copy_join, escape, lines_of_changes, spool_page, spool_pages
from bronzeline.sources.cdc.pgoutput import PG_EPOCH, Decoder

OID = 16400
TS = 789_000_000_000_000  # microseconds after 2000-01-01
WHEN = PG_EPOCH.timestamp() + TS / 1e6


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def relation(oid: int = OID, table: str = "docs", identity: bytes = b"d") -> bytes:
    cols = [(1, "id", 20), (0, "title", 25), (0, "body", 25)]
    out = b"R" + struct.pack(">I", oid) + cstr("public") + cstr(table) + identity + struct.pack(">h", len(cols))
    for flags, name, type_oid in cols:
        out += bytes([flags]) + cstr(name) + struct.pack(">Ii", type_oid, -1)
    return out


def tup(*values: bytes | str | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack(">I", len(v)) + v
    return out


def begin(lsn: int) -> bytes:
    return b"B" + struct.pack(">QqI", lsn, TS, 7)


def commit(lsn: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, lsn, lsn + 40, TS)


def insert(*values: bytes | None, oid: int = OID) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tup(*values)


def update(new: tuple[bytes | str | None, ...], old: tuple[bytes | None, ...] | None = None) -> bytes:
    return b"U" + struct.pack(">I", OID) + (b"K" + tup(*old) if old else b"") + b"N" + tup(*new)


def delete(key: bytes) -> bytes:
    return b"D" + struct.pack(">I", OID) + b"K" + tup(key, None, None)


def spool(tmp_path: Path, messages: list[bytes], max_changes: int = 1000, after: int | None = None,
          wanted: set[tuple[str, str]] | None = None) -> tuple[object, list[list[str]]]:
    page = spool_page(iter([(m,) for m in messages]), Decoder(), max_changes, after, wanted, tmp_path)
    lines = page.tables.get(("public", "docs"))
    rows = [] if lines is None else [line.split("\t") for line in lines.path.read_text().splitlines()]
    return page, rows


def test_insert_update_delete_as_copy_lines(tmp_path: Path) -> None:
    page, rows = spool(tmp_path, [
        relation(), begin(0x100), insert(b"1", b"first", b"x" * 10), update((b"1", b"second", "u")),
        update((b"2", b"moved", b"b"), old=(b"1", None, None)), delete(b"2"), commit(0x100)])
    stamp = datetime.fromtimestamp(WHEN, UTC).isoformat()
    assert rows == [
        ["I", lsn_text(0x100), "0", stamp, "{}", "1", "first", "x" * 10, r"\N"],
        ["U", lsn_text(0x100), "1", stamp, '{"body"}', "1", "second", r"\N", r"\N"],  # unchanged TOAST: marked
        ["U", lsn_text(0x100), "2", stamp, "{}", "2", "moved", "b", "1"],  # a key change carries its old key
        ["D", lsn_text(0x100), "3", stamp, "{}", "2", r"\N", r"\N", "2"]]
    lines = page.tables[("public", "docs")]  # type: ignore[attr-defined]
    assert (lines.rows, lines.txns, lines.unchanged, lines.moved) == (4, [(0x100, 4)], {"body"}, True)
    assert page.end_lsn == 0x100 and page.changes == 4 and page.caught_up  # type: ignore[attr-defined]


def test_values_are_escaped_only_when_they_need_it(tmp_path: Path) -> None:
    tricky = ["tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "", "naïve — 東京 🚚"]
    messages = [relation(), begin(0x200)]
    messages += [insert(str(i).encode(), value.encode(), None) for i, value in enumerate(tricky)]
    _, rows = spool(tmp_path, [*messages, commit(0x200)])
    assert [r[6] for r in rows] == ["tab\\there", "line\\nbreak\\r\\n", "back\\\\slash", "\\\\N", "", tricky[5]]
    assert all(r[7] == r"\N" for r in rows)  # a NULL stays \N next to escaped values
    assert escape(b"a\\b\tc\nd\re") == b"a\\\\b\\tc\\nd\\re"
    assert copy_join([b"x", b"\\N"], 0) == b"x\t\\\\N"  # the text \N is not a NULL


def test_key_change_with_an_unchanged_value_needs_the_planner(tmp_path: Path) -> None:
    moved = update((b"9", b"moved", "u"), old=(b"1", None, None))
    page, _ = spool(tmp_path, [relation(), begin(0x300), moved, commit(0x300)])
    assert page.needs_planner  # type: ignore[attr-defined]
    # after a first transaction the page ends before it instead: the next page starts with it
    page, rows = spool(tmp_path, [relation(), begin(0x300), insert(b"5", b"a", b"b"), commit(0x300),
                                  begin(0x400), insert(b"6", b"c", b"d"), moved, commit(0x400)])
    assert not page.needs_planner and not page.caught_up  # type: ignore[attr-defined]
    assert page.end_lsn == 0x300 and [r[5] for r in rows] == ["5"]  # type: ignore[attr-defined]


def test_pages_end_at_whole_transactions_skip_applied_ones_and_other_tables(tmp_path: Path) -> None:
    messages = [relation(), relation(OID + 1, "other")]
    for n in range(4):
        lsn = 0x1000 + n
        messages += [begin(lsn), insert(str(2 * n).encode(), b"t", b"b"), insert(b"0", b"o", b"o", oid=OID + 1),
                     commit(lsn)]
    page, rows = spool(tmp_path, messages, max_changes=5, after=0x1000, wanted={("public", "docs")})
    # the first transaction is already applied; the page ends with the one that reaches 5 changes (the other
    # table's count too)
    assert [r[5] for r in rows] == ["2", "4", "6"]
    assert page.end_lsn == 0x1003 and not page.caught_up  # type: ignore[attr-defined]
    assert list(page.tables) == [("public", "docs")]  # type: ignore[attr-defined]
    assert len(list(tmp_path.iterdir())) == 1  # no file for a table that is not wanted
    pages = list(spool_pages(iter([(m,) for m in messages]), Decoder(), 3, None, None, tmp_path))
    assert [(p.end_lsn, p.transactions, p.changes, p.caught_up) for p in pages] == [
        (0x1001, 2, 4, False), (0x1003, 2, 4, False)]  # one stream, two pages (full: the reader asks again)
    assert sum(p.messages for p in pages) == len(messages)


def test_truncate_and_a_second_shape(tmp_path: Path) -> None:
    truncate = b"T" + struct.pack(">IB", 1, 0) + struct.pack(">I", OID)
    page, rows = spool(tmp_path, [relation(), begin(0x10), insert(b"1", b"a", b"b"), truncate, commit(0x10)])
    assert rows[1] == ["T", lsn_text(0x10), "1", rows[1][3], "{}", r"\N", r"\N", r"\N", r"\N"]
    assert page.tables[("public", "docs")].truncate  # type: ignore[attr-defined]
    reshaped = relation().replace(b"body", b"text")
    page, rows = spool(tmp_path, [relation(), begin(0x10), insert(b"1", b"a", b"b"), commit(0x10),
                                  reshaped, begin(0x20), insert(b"2", b"a", b"b"), commit(0x20)])
    assert page.end_lsn == 0x10 and len(rows) == 1 and not page.caught_up  # type: ignore[attr-defined]


def test_a_change_before_its_relation_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChangeDecodeError, match="before its Relation"):
        spool(tmp_path, [begin(0x10), insert(b"1", b"a", b"b"), commit(0x10)])
    assert list(tmp_path.iterdir()) == []


def test_change_objects_give_the_same_lines(tmp_path: Path) -> None:
    rel = Relation(OID, "public", "docs", "d", (RelationColumn("id", 20, -1, True),
                                                RelationColumn("title", 25, -1, False),
                                                RelationColumn("body", 25, -1, False)))
    when = datetime.fromtimestamp(WHEN, UTC)
    changes = [Change("I", "public", "docs", 0x100, when, 0, {"id": "1", "title": "tab\tx", "body": "x"}, None),
               Change("U", "public", "docs", 0x100, when, 1, {"id": "1", "title": "t", "body": UNCHANGED}, None),
               Change("U", "public", "docs", 0x100, when, 2, {"id": "2", "title": "m", "body": "b"}, {"id": "1"}),
               Change("D", "public", "docs", 0x100, when, 3, None, {"id": "2"})]
    lines = lines_of_changes(changes, rel, ["id"], tmp_path / "objects.copy")
    assert lines is not None
    _, rows = spool(tmp_path, [relation(), begin(0x100), insert(b"1", b"tab\tx", b"x"), update((b"1", b"t", "u")),
                               update((b"2", b"m", b"b"), old=(b"1", None, None)), delete(b"2"), commit(0x100)])
    assert lines.path.read_text() == "".join("\t".join(r) + "\n" for r in rows)
    moved_unchanged = Change("U", "public", "docs", 0x200, when, 0, {"id": "3", "title": "m", "body": UNCHANGED},
                             {"id": "1"})
    assert lines_of_changes([moved_unchanged], rel, ["id"], tmp_path / "planner.copy") is None
