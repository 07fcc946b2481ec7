"""The push spool without services: framing and torn tails, the group-commit writer and rotation, claiming
by runs (with and without a receiver holding the lock), re-claiming what a run never reported loaded, and the
batch lines a claimed push becomes."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bronzeline.config.models import PushConfig, TableConfig
from bronzeline.receive import segments
from bronzeline.receive.segments import Entry, SegmentReader, SpoolLock, new_push_id
from bronzeline.receive.spool import SpoolWriter
from bronzeline.sources import SourceEnv
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.base import Window
from bronzeline.sources.push.records import records_of
from bronzeline.sources.push.source import PushSource


def entry(n: int, endpoint: str = "pushobd", form: dict[str, str] | None = None) -> Entry:
    data = form if form is not None else {"data_list": json.dumps([{"seq": n, "rpm": 900}])}
    return Entry(new_push_id(), f"/{endpoint}", endpoint, datetime.now(UTC), "127.0.0.1", data)


def written(root: Path, entries: list[Entry]) -> SpoolWriter:
    writer = SpoolWriter(root)
    writer.start()
    for e in entries:
        writer.append_wait(e)
    return writer


def all_entries(folder: Path, suffix: str = "") -> list[Entry]:
    found: list[Entry] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffix) and p.name != ".lock"):
        found += list(SegmentReader(path))
    return found


def test_an_entry_frames_and_parses_back_and_a_flipped_byte_is_refused() -> None:
    e = entry(1, form={"data_list": "[{\"a\":\"é\\n\"}]", "extra": "x"})
    line = e.frame()
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert Entry.parse(line) == e
    broken = line.replace(b'"extra"', b'"extrb"')
    assert Entry.parse(broken) is None
    assert Entry.parse(line[:-1]) is None  # no newline: torn


def test_a_torn_or_zero_filled_tail_is_ignored_and_measured(tmp_path: Path) -> None:
    segment = tmp_path / "a.seg"
    good = [entry(i) for i in range(3)]
    frames = b"".join(e.frame() for e in good)
    for tail in (entry(9).frame()[:-7], b"\0" * 4096, b"garbage\n" + entry(10).frame()):
        segment.write_bytes(frames + tail)
        reader = SegmentReader(segment)
        assert list(reader) == good
        assert reader.torn_bytes == len(tail)  # everything after the first bad line: never acknowledged


def test_concurrent_appends_are_all_durable_in_order_of_commit(tmp_path: Path) -> None:
    commits: list[int] = []
    writer = SpoolWriter(tmp_path, on_commit=lambda n, s: commits.append(n))
    writer.start()
    made: list[Entry] = []
    lock = threading.Lock()

    def post(t: int) -> None:
        for i in range(50):
            e = entry(t * 1000 + i)
            writer.append_wait(e)  # returns only after the fsync that covers it
            with lock:
                made.append(e)

    threads = [threading.Thread(target=post, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {e.push_id for e in all_entries(tmp_path / "pushobd", segments.OPEN)} == {e.push_id for e in made}
    assert sum(commits) == 400
    writer.close()
    assert not list((tmp_path / "pushobd").glob("*.open"))  # close seals


def test_segments_rotate_by_size_and_on_seal(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=1000)
    writer.start()
    for i in range(20):
        writer.append_wait(entry(i))
    writer.append_wait(entry(99, "pushgps"))
    writer.seal()
    folder = tmp_path / "pushobd"
    assert len(list(folder.glob("*.seg"))) > 3 and not list(folder.glob("*.open"))
    assert [e.form for e in all_entries(folder)] == [entry(i).form for i in range(20)]  # names sort in time order
    assert len(all_entries(tmp_path / "pushgps", ".seg")) == 1
    writer.close()


def test_a_run_takes_only_closed_segments_while_a_receiver_holds_the_lock(tmp_path: Path) -> None:
    receiver = SpoolLock(tmp_path)
    assert receiver.try_acquire()
    writer = written(tmp_path, [entry(1), entry(2)])
    writer.seal()
    writer.append_wait(entry(3))  # in the open segment
    taken = segments.claim(tmp_path, "pushobd", run_id=7)
    assert [json.loads(e.form["data_list"])[0]["seq"] for p in taken for e in SegmentReader(p)] == [1, 2]
    assert segments.has_ready(tmp_path, "pushobd")  # claimed, not yet reported loaded
    segments.forget(tmp_path, "pushobd", 7)
    assert not segments.has_ready(tmp_path, "pushobd")
    writer.close()
    receiver.release()
    taken = segments.claim(tmp_path, "pushobd", run_id=8)
    assert [json.loads(e.form["data_list"])[0]["seq"] for p in taken for e in SegmentReader(p)] == [3]


def test_a_killed_receivers_open_segment_is_taken_by_a_run_without_its_torn_tail(tmp_path: Path) -> None:
    writer = written(tmp_path, [entry(1), entry(2)])
    open_segment = next((tmp_path / "pushobd").glob("*.open"))
    with open_segment.open("ab") as handle:  # what kill -9 mid-write leaves: a frame cut short
        handle.write(entry(3).frame()[:40])
    # the writer thread is a daemon that never closes: like a killed process, it leaves the .open file
    taken = segments.claim(tmp_path, "pushobd", run_id=1)
    assert len(taken) == 1 and taken[0].suffix == ".seg"
    reader = SegmentReader(taken[0])
    assert [json.loads(e.form["data_list"])[0]["seq"] for e in reader] == [1, 2] and reader.torn_bytes == 40
    del writer


def test_a_receiver_start_seals_leftovers(tmp_path: Path) -> None:
    (tmp_path / "pushgps").mkdir(parents=True)
    (tmp_path / "pushgps" / "0001-x.open").write_bytes(entry(1, "pushgps").frame())
    assert segments.seal_leftovers(tmp_path) == 1
    assert [p.name for p in (tmp_path / "pushgps").iterdir()] == ["0001-x.seg"]


def test_what_an_earlier_run_claimed_and_never_reported_is_streamed_again_once(tmp_path: Path) -> None:
    writer = written(tmp_path, [entry(1)])
    writer.seal()
    first = segments.claim(tmp_path, "pushobd", run_id=1)  # ...and the run died before batch_loaded
    writer.append_wait(entry(2))
    writer.seal()
    second = segments.claim(tmp_path, "pushobd", run_id=2)
    assert {p.name for p in first} < {p.name for p in second} and len(second) == 2
    assert [p.name for p in (tmp_path / "pushobd" / "claimed").iterdir()] == ["2"]  # moved, not copied
    segments.forget(tmp_path, "pushobd", 2)
    assert not segments.has_ready(tmp_path, "pushobd")
    writer.close()


def test_pushes_become_one_line_per_item_and_malformed_bodies_one_error_line() -> None:
    good = entry(0, form={"data_list": json.dumps([{"a": 1}, {"b": 2}])})
    lines = list(records_of(good))
    assert [r.record for r in lines] == [{"a": 1}, {"b": 2}] and all(r.error is None for r in lines)
    assert [(r.call["push_id"], r.call["item"], r.call["path"]) for r in lines] == [
        (good.push_id, 0, "/pushobd"), (good.push_id, 1, "/pushobd")]
    assert all(r.fetched_at == good.received_at for r in lines)
    [bad] = records_of(entry(0, form={"data_list": "{not json"}))
    assert bad.record == "{not json" and bad.error == "`data_list` is not a JSON array"
    [missing] = records_of(entry(0, form={"other": "1"}))
    assert missing.error == "the push has no `data_list` field" and json.loads(missing.record) == {"other": "1"}
    mixed = list(records_of(entry(0, form={"data_list": '[{"a": 1}, 5]'})))
    assert mixed[0].error is None and mixed[1].record == "5" and mixed[1].error is not None
    alarm = Entry(new_push_id(), "/push", "platform_alarm", datetime.now(UTC), None,
                  {"msgType": "jimi.push.device.alarm", "data": '{"imei": "86", "alarmType": "1"}'})
    [line] = records_of(alarm)
    assert line.record == {"msgType": "jimi.push.device.alarm", "data": {"imei": "86", "alarmType": "1"}}
    assert ApiRecord.from_line(line.to_line()) == line


def test_the_push_source_streams_claimed_segments_as_batch_lines_and_forgets_them_when_loaded(tmp_path: Path) -> None:
    cfg = PushConfig(type="tracksolid_push", token="t", spool="./spool")
    source = PushSource("pushes", cfg, SourceEnv(base_dir=tmp_path))
    writer = written(tmp_path / "spool", [entry(1), entry(2, form={"data_list": "oops"})])
    writer.close()
    table = TableConfig.model_validate({"name": "obd_pushes", "source": "pushes", "endpoint": "pushobd"})
    extract = source.extract(table, [], Window(None, datetime.now(UTC), run_id=5))
    lines = [ApiRecord.from_line(line) for chunk in extract for line in chunk.splitlines(keepends=True)]
    assert extract.rows == 2 and extract.malformed == 1 and extract.pushes == 2
    assert lines[0].record == {"seq": 1, "rpm": 900} and lines[1].error is not None
    source.batch_loaded(table, 5)
    assert not segments.has_ready(tmp_path / "spool", "pushobd")
    again = source.extract(table, [], Window(None, datetime.now(UTC), run_id=6))
    assert list(again) == [] and again.rows == 0


def test_receive_without_a_push_table_says_what_to_add(tmp_path: Path) -> None:
    from tests.cli import invoke

    (tmp_path / "bronzeline.yml").write_text(
        "project: fleet\nconnections:\n  warehouse: {dsn: \"host=127.0.0.1 port=1 dbname=x user=x\"}\n"
        "blob: {url: file://./blob}\ntables: []\n")
    result = invoke(tmp_path, "receive", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no table reads a push connection: add a connection with "
                                    "`type: tracksolid_push`")


def test_a_failed_write_is_not_acknowledged_and_nothing_is_appended_after_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from bronzeline.receive import spool

    writer = written(tmp_path, [entry(1)])
    real = os.fdatasync
    calls = {"n": 0}

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(spool.os, "fdatasync", failing_once)
    with pytest.raises(spool.SpoolError, match="Input/output error"):
        writer.append_wait(entry(2))  # not acknowledged: the platform sends it again
    writer.append_wait(entry(3))
    writer.close()
    folder = tmp_path / "pushobd"
    assert len(list(folder.glob("*.seg"))) == 2  # the failed segment was cut back and closed; 3 is in a new one
    assert [json.loads(e.form["data_list"])[0]["seq"] for e in all_entries(folder)] == [1, 3]
