"""The pgoutput decoder on messages captured from a PostgreSQL 15 slot (proto_version 1, messages on), and on
messages built by hand for the cases a server rarely sends (binary values, a relation never announced).

Captured from: fleet(id bigint PK, name text, big text, m mood, note text), pair(a int, b text, v numeric(5,2),
PK (a, b)), full_id(k int, v text) REPLICA IDENTITY FULL, publication pub on the three."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from bronzeline.errors import ChangeDecodeError, SourceError, Terminal
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Relation, lsn_text, parse_lsn
from bronzeline.sources.cdc.pgoutput import Begin, Commit, Decoder, LogicalMessage, Origin, Truncated, TypeInfo

H = bytes.fromhex
BEGIN = H("4200000000019727b00003049b9982c73000000303")
COMMIT = H("430000000000019727b000000000019727e00003049b9982c730")
TYPE_MOOD = H("59000040377075626c6963006d6f6f6400")
REL_FLEET = H("520000403b7075626c696300666c656574006400050169640000000014ffffffff006e616d650000000019ffffffff00626967"
              "0000000019ffffffff006d0000004037ffffffff006e6f74650000000019ffffffff")
REL_PAIR = H("52000040427075626c696300706169720064000301610000000017ffffffff01620000000019ffffffff007600000006a40005"
             "0006")
REL_FULL = H("52000040497075626c69630066756c6c5f696400660002016b0000000017ffffffff01760000000019ffffffff")
INSERT_PAIR = H("49000040424e00037400000001317400000001617400000004312e3530")
UPDATE_PAIR_KEY = H("55000040424b00037400000001317400000001616e4e00037400000001327400000001617400000004312e3530")
DELETE_PAIR = H("44000040424b00037400000001327400000001616e")
INSERT_FULL = H("49000040494e00027400000001377400000005736576656e")
UPDATE_FULL = H("55000040494f00027400000001377400000005736576656e4e00027400000001377400000005534556454e")
TRUNCATE_FULL = H("54000000010000004049")
HEARTBEAT = H("4d01000000000197331862726f6e7a656c696e650000000009686561727462656174")
# UPDATE fleet SET name = 'Kisumu', note = NULL: `big` (3,200 random characters, stored out of line) unsent
UPDATE_FLEET_TOAST = H("550000403b4e000574000000013274000000064b6973756d757574000000037361646e")


def decoder_with(*messages: bytes) -> Decoder:
    dec = Decoder()
    for m in messages:
        dec.decode(m)
    return dec


def test_begin_and_commit_carry_the_commit_lsn_and_time() -> None:
    dec = Decoder()
    begin = dec.decode(BEGIN)
    assert isinstance(begin, Begin)
    assert begin.final_lsn == 0x19727B0 and begin.xid == 0x303
    assert begin.commit_time.tzinfo is UTC and begin.commit_time > datetime(2024, 1, 1, tzinfo=UTC)
    commit = dec.decode(COMMIT)
    assert isinstance(commit, Commit)
    assert commit.commit_lsn == begin.final_lsn and commit.end_lsn == 0x19727E0 > commit.commit_lsn
    assert commit.commit_time == begin.commit_time


def test_relation_marks_the_replica_identity_columns() -> None:
    dec = Decoder()
    rel = dec.decode(REL_PAIR)
    assert isinstance(rel, Relation)
    assert (rel.schema, rel.table, rel.replica_identity) == ("public", "pair", "d")
    assert [(c.name, c.is_key) for c in rel.columns] == [("a", True), ("b", True), ("v", False)]
    assert [c.type_oid for c in rel.columns] == [23, 25, 1700]
    assert rel.columns[2].typmod == (5 << 16 | 2) + 4  # numeric(5,2)
    assert dec.relations[rel.oid] is rel and dec.by_name[("public", "pair")] is rel
    full = dec.decode(REL_FULL)
    assert isinstance(full, Relation) and full.replica_identity == "f"
    assert all(c.is_key for c in full.columns)  # identity FULL flags every column


def test_type_message_for_a_user_type() -> None:
    info = Decoder().decode(TYPE_MOOD)
    assert info == TypeInfo(0x4037, "public", "mood")


def test_insert_update_delete_with_a_composite_key() -> None:
    dec = decoder_with(REL_PAIR, BEGIN)
    ins = dec.decode(INSERT_PAIR)
    assert ins == Change("I", "public", "pair", 0x19727B0, ins.commit_time, 0, {"a": "1", "b": "a", "v": "1.50"}, None)
    upd = dec.decode(UPDATE_PAIR_KEY)
    assert isinstance(upd, Change) and upd.op == "U" and upd.seq == 1
    assert upd.new == {"a": "2", "b": "a", "v": "1.50"}
    assert upd.old_key == {"a": "1", "b": "a"}  # the key changed: the old one, key columns only
    dele = dec.decode(DELETE_PAIR)
    assert isinstance(dele, Change) and dele.op == "D" and dele.new is None and dele.seq == 2
    assert dele.old_key == {"a": "2", "b": "a"}


def test_a_new_transaction_restarts_the_order() -> None:
    dec = decoder_with(REL_PAIR, BEGIN, INSERT_PAIR, COMMIT, BEGIN)
    change = dec.decode(INSERT_PAIR)
    assert isinstance(change, Change) and change.seq == 0


def test_unchanged_toast_is_unchanged_never_null() -> None:
    dec = decoder_with(TYPE_MOOD, REL_FLEET, BEGIN)
    upd = dec.decode(UPDATE_FLEET_TOAST)
    assert isinstance(upd, Change)
    assert upd.new == {"id": "2", "name": "Kisumu", "big": UNCHANGED, "m": "sad", "note": None}
    assert upd.old_key is None  # the key did not change and the identity is the primary key


def test_identity_full_gives_the_old_row_or_the_configured_key() -> None:
    dec = decoder_with(REL_FULL, BEGIN)
    assert dec.decode(INSERT_FULL) == Change("I", "public", "full_id", 0x19727B0, dec.commit_time, 0,
                                             {"k": "7", "v": "seven"}, None)
    upd = dec.decode(UPDATE_FULL)
    assert isinstance(upd, Change) and upd.new == {"k": "7", "v": "SEVEN"}
    assert upd.old_key == {"k": "7", "v": "seven"}
    keyed = decoder_with(BEGIN)
    keyed.keys = {("public", "full_id"): ("k",)}
    keyed.decode(REL_FULL)
    upd = keyed.decode(UPDATE_FULL)
    assert isinstance(upd, Change) and upd.old_key == {"k": "7"}


def test_non_ascii_text_is_decoded() -> None:
    dec = decoder_with(TYPE_MOOD, REL_FLEET, BEGIN)
    row = b"I" + struct.pack(">I", 0x403B) + b"N" + tuple_data("1", "Nairobi ✓", None, "ok", "")
    change = dec.decode(row)
    assert isinstance(change, Change)
    assert change.new == {"id": "1", "name": "Nairobi ✓", "big": None, "m": "ok", "note": ""}  # '' is not NULL


def test_truncate_gives_one_change_per_relation() -> None:
    dec = decoder_with(REL_FULL, REL_PAIR, BEGIN)
    out = dec.decode(TRUNCATE_FULL)
    assert isinstance(out, Truncated) and [(c.op, c.table, c.new, c.old_key) for c in out.changes] == [
        ("T", "full_id", None, None)]
    both = dec.decode(b"T" + struct.pack(">IB", 2, 0) + struct.pack(">II", 0x4049, 0x4042))
    assert isinstance(both, Truncated) and [(c.table, c.seq) for c in both.changes] == [("full_id", 1), ("pair", 2)]


def test_logical_message_heartbeat() -> None:
    msg = Decoder().decode(HEARTBEAT)
    assert msg == LogicalMessage(True, 0x1973318, "bronzeline", b"heartbeat")


def test_origin_message() -> None:
    origin = Decoder().decode(b"O" + struct.pack(">Q", 0x16B374D848) + b"node_a\0")
    assert origin == Origin(0x16B374D848, "node_a")


def test_errors_are_typed_and_terminal() -> None:
    dec = decoder_with(REL_PAIR, BEGIN)
    with pytest.raises(ChangeDecodeError, match="before its Relation"):
        dec.decode(b"I" + struct.pack(">I", 999) + b"N" + tuple_data("1"))
    with pytest.raises(ChangeDecodeError, match="binary values"):
        dec.decode(b"I" + struct.pack(">I", 0x4042) + b"N" + struct.pack(">h", 3) + b"b" + struct.pack(">I", 0) * 3)
    with pytest.raises(ChangeDecodeError, match="2 columns, its relation 3"):
        dec.decode(b"I" + struct.pack(">I", 0x4042) + b"N" + tuple_data("1", "a"))
    with pytest.raises(ChangeDecodeError, match="unknown pgoutput message"):
        dec.decode(b"S" + bytes(8))  # 'S': a stream start, which protocol 1 never sends
    with pytest.raises(ChangeDecodeError, match="past the end"):
        dec.decode(INSERT_PAIR[:-3])  # cut inside a value
    with pytest.raises(ChangeDecodeError, match="cannot decode"):
        dec.decode(INSERT_PAIR[:12])  # cut inside a length
    assert issubclass(ChangeDecodeError, SourceError) and issubclass(ChangeDecodeError, Terminal)


def test_lsn_text_round_trip() -> None:
    assert lsn_text(0x16B374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn(lsn_text(0)) == 0


def tuple_data(*values: str | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        else:
            raw = v.encode()
            out += b"t" + struct.pack(">I", len(raw)) + raw
    return out
