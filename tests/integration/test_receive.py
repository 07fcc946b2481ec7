"""`bronzeline receive` over real HTTP on loopback, as a subprocess: tokens, sizes, unknown paths, malformed
bodies, repeated pushes, the flush loop, SIGTERM, and kill -9 under a load of concurrent pushes.

The first tests need no warehouse (the receiver acknowledges from its spool whatever the warehouse does);
the ones that look in bronze need the JSON-lines load path and the push endpoint schemas."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bronzeline.config.models import PushConfig, TableConfig
from bronzeline.receive import segments
from bronzeline.sources import SourceEnv
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.base import Window
from bronzeline.sources.push.source import PushSource
from tests.integration.pipeline import Pipeline
from tests.integration.receiving import NO_WAREHOUSE, TOKEN, Pushers, Receiver, config_text, form


def receiver_in(folder: Path, env: dict[str, str], flush_seconds: float) -> Receiver:
    (folder / "bronzeline.yml").write_text(config_text(flush_seconds))
    return Receiver(folder, env)


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver whose warehouse never answers and that does not flush on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"WAREHOUSE_DSN": NO_WAREHOUSE, "PUSH_TOKEN": TOKEN})
    receiver = receiver_in(tmp_path, env, flush_seconds=3600)
    receiver.start()
    yield receiver
    receiver.close()


def spooled_lines(folder: Path) -> list[ApiRecord]:
    """Every push left in the spool, as the batch lines a run would write (claimed by a throwaway run)."""
    source = PushSource("pushes", PushConfig(type="tracksolid_push", token=TOKEN), SourceEnv(base_dir=folder))
    table = TableConfig.model_validate({"name": "obd_pushes", "source": "pushes", "endpoint": "pushobd"})
    chunks = source.extract(table, [], Window(None, datetime.now(UTC), run_id=999_999))
    return [ApiRecord.from_line(line) for chunk in chunks for line in chunk.splitlines(keepends=True)]


def spool_files(folder: Path) -> list[str]:
    spool = folder / "spool"
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file() and p.name != ".lock")


# ---------------------------------------------------------------------------------------------- refusals
def test_a_wrong_or_missing_token_gets_401_and_stores_nothing(bare: Receiver) -> None:
    assert bare.post("/pushobd", form([{"a": 1}], token="wrong")) == (401, {
        "code": 401, "msg": "wrong or missing token; nothing was stored"})
    assert bare.post("/pushobd", form([{"a": 1}], token=None))[0] == 401
    assert bare.post("/pushobd", form([{"a": 1}], token=TOKEN[:-1]))[0] == 401  # a prefix is not the token
    alarm = b'msgType=jimi.push.device.alarm&data={"imei":"86"}'
    assert bare.post("/push?token=nope", alarm)[0] == 401  # the platform's own push: token in the query
    assert bare.metric("bronzeline_push_rejected_total", reason="unauthorized") == 4
    assert spool_files(bare.folder) == []
    assert bare.post(f"/push?token={TOKEN}", alarm) == (200, {"code": 0, "msg": "success"})
    assert bare.stop() == 0
    assert [p.split("/")[0] for p in spool_files(bare.folder)] == ["platform_alarm"]


def test_a_body_over_max_body_gets_413_before_it_is_read_and_stores_nothing(bare: Receiver) -> None:
    # Declared too large: refused from the headers alone (no body is ever sent).
    with socket.create_connection(("127.0.0.1", bare.port), timeout=10) as sock:
        sock.sendall(b"POST /pushobd HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 10000000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    # Streamed without a length: refused once the read passes max_body (64KB here).
    with socket.create_connection(("127.0.0.1", bare.port), timeout=10) as sock:
        sock.sendall(b"POST /pushobd HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"token=" + TOKEN.encode() + b"&data_list=" + b"x" * 16_000
        try:
            for _ in range(6):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the receiver answered and closed while we were still sending
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert bare.metric("bronzeline_push_rejected_total", reason="too_large") == 2
    assert bare.post("/pushobd", form([{"a": 1}]))[0] == 200  # the receiver is fine afterwards
    assert bare.stop() == 0
    assert [r.record for r in spooled_lines(bare.folder)] == [{"a": 1}]


def test_a_path_no_table_reads_gets_404(bare: Receiver) -> None:
    status, body = bare.post("/pushgps", form([{"a": 1}]))
    assert status == 404 and "endpoint: pushgps" in body["msg"]
    other = b'msgType=jimi.open.instruction.raw.receive&data={"imei":"86"}'  # platform_push: no table reads it
    assert bare.post(f"/push?token={TOKEN}", other)[0] == 404
    assert spool_files(bare.folder) == []


def test_kill_9_under_concurrent_pushes_keeps_every_acknowledged_push_in_the_spool_once(bare: Receiver) -> None:
    with Pushers(bare, threads=8) as load:
        time.sleep(1.0)
        bare.kill()  # mid-stream: requests in flight, a group commit perhaps half written
        bare.start()
        time.sleep(0.7)
        assert bare.stop() == 0  # SIGTERM under load: the pushes in flight are answered (after their fsync)
    seqs = [r.record["seq"] for r in spooled_lines(bare.folder)]
    assert len(load.acked) > 200
    assert load.acked <= set(seqs) <= load.sent  # nothing acknowledged is lost, nothing is invented
    assert len(seqs) == len(set(seqs))  # and nothing is stored twice


# ---------------------------------------------------------------------------------------------- into bronze
@pytest.fixture
def warehouse(pipeline: Pipeline) -> Iterator[tuple[Pipeline, Receiver]]:
    """A migrated warehouse and a receiver that flushes twice a second."""
    env = {**pipeline.environ(), "PUSH_TOKEN": TOKEN}
    receiver = receiver_in(pipeline.tmp, env, flush_seconds=0.5)
    pipeline.env["PUSH_TOKEN"] = TOKEN
    pipeline.cli("migrate", check=True)
    yield pipeline, receiver
    receiver.close()


def bronze(pipeline: Pipeline, query: str) -> list[tuple[Any, ...]]:
    with pipeline.wh() as conn:
        return conn.execute(query).fetchall()


def wait_for(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_a_malformed_push_is_acknowledged_counted_and_lands_in_raw_with_its_error(
        warehouse: tuple[Pipeline, Receiver]) -> None:
    pipeline, receiver = warehouse
    receiver.start()
    assert receiver.post("/pushobd", form("{not a json array"))[0] == 200  # acknowledged: not retried for ever
    assert receiver.post("/pushobd", form([{"rpm": 1}, 7]))[0] == 200
    assert receiver.metric("bronzeline_push_malformed_total", endpoint="pushobd") == 2
    assert receiver.stop() == 0  # the final flush loads them
    raw = bronze(pipeline, "SELECT record, error IS NOT NULL FROM bronze.obd_pushes_raw ORDER BY record_id")
    assert sorted(raw, key=str) == sorted([("{not a json array", True), ({"rpm": 1}, False), ("7", True)], key=str)
    assert bronze(pipeline, "SELECT count(*) FROM bronze.obd_pushes") == [(1,)]
    assert bronze(pipeline, "SELECT sum(rows_invalid) FROM dwh_control.extract_runs "
                            "WHERE table_name = 'obd_pushes' AND status = 'loaded'") == [(2,)]


def test_a_repeated_push_is_once_in_the_typed_table_and_the_flush_loop_loads_while_receiving(
        warehouse: tuple[Pipeline, Receiver]) -> None:
    pipeline, receiver = warehouse
    receiver.start()
    same = form([{"obd": {"rpm": 900, "coolant": 88}, "deviceImei": "868120000000001"}])
    assert receiver.post("/pushobd", same)[0] == 200
    assert receiver.post("/pushobd", same)[0] == 200  # the platform sent it again
    wait_for(lambda: bronze(pipeline, "SELECT count(*) FROM bronze.obd_pushes_raw") == [(2,)])
    assert receiver.post("/pushobd", same)[0] == 200  # and again, into a later batch
    wait_for(lambda: bronze(pipeline, "SELECT count(*) FROM bronze.obd_pushes_raw") == [(3,)])
    assert bronze(pipeline, "SELECT count(*) FROM bronze.obd_pushes") == [(1,)]
    assert receiver.metric("bronzeline_push_loaded_records_total", table="obd_pushes") == 3
    # `run` in another process while the receiver lives: it takes only closed segments, and finds none.
    assert pipeline.cli("run", "obd_pushes").returncode == 0
    assert receiver.stop() == 0
    assert not segments.has_ready(pipeline.tmp / "spool", "pushobd")


def test_kill_9_under_concurrent_pushes_every_acknowledged_push_is_in_bronze_once(
        warehouse: tuple[Pipeline, Receiver]) -> None:
    pipeline, receiver = warehouse
    receiver.start()
    with Pushers(receiver, threads=8) as load:
        time.sleep(1.5)  # a few flushes run meanwhile: the kill may land in one
        receiver.kill()
        receiver.start()
        time.sleep(1.0)
    assert receiver.stop() == 0
    assert pipeline.cli("run", "obd_pushes").returncode == 0
    rows = bronze(pipeline, "SELECT record->>'seq', count(*) FROM bronze.obd_pushes_raw GROUP BY 1")
    seqs = {seq for seq, _ in rows}
    assert len(load.acked) > 200
    assert load.acked <= seqs <= load.sent
    assert all(count == 1 for _, count in rows)
    assert bronze(pipeline, "SELECT count(*) FROM bronze.obd_pushes") == [(len(seqs),)]
    loaded = bronze(pipeline, "SELECT sum(rows_loaded) FROM dwh_control.extract_runs "
                              "WHERE table_name = 'obd_pushes' AND status = 'loaded'")
    assert loaded == [(len(seqs),)]  # the ledger counts exactly what is in bronze
    assert pipeline.files("exports", "obd_pushes") == []
    assert not segments.has_ready(pipeline.tmp / "spool", "pushobd")
