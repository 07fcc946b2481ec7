#!/usr/bin/env python3
"""Push receiver benchmark: pushes acknowledged per second (each after its fsync), ack latency, and the time
to flush them into bronze.

Starts `bronzeline receive` as a subprocess on a fresh warehouse database, fires pushes at `/pushobd` from
N concurrent keep-alive clients (spread over a few processes, so the client side is not one GIL) for T
seconds, then stops the receiver with SIGTERM — which answers what is in flight, closes the spool and
loads it through the ordinary run path — and counts the rows in bronze.

    python bench/receive.py --dsn "host=127.0.0.1 port=54343 user=postgres password=… dbname=postgres" \
        --clients 8 --seconds 10 --items 1

Latency is measured at the client (send to full reply). The receiver, the clients and PostgreSQL share the
machine's cores; `--items` items per push (the platform sends up to 50).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
DB, TOKEN = "bench_receive", "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_bytes(port: int, client: str, n: int, items: int) -> bytes:
    data = [{"imei": f"86{client}", "seq": n, "item": i, "obd": {"rpm": 900 + i, "coolant": 88}} for i in range(items)]
    body = f"token={TOKEN}&data_list={quote(json.dumps(data, separators=(',', ':')))}".encode()
    return (f"POST /pushobd HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def read_reply(sock: socket.socket, pending: bytearray) -> int:
    """Read one HTTP reply off a keep-alive socket; returns its status."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    pending[:] = rest[length:]
    return int(head.split(b" ", 2)[1])


def client_process(port: int, threads: int, seconds: float, items: int, proc: int, out: multiprocessing.Queue) -> None:
    latencies: list[float] = []
    acked = [0]
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(tid: int) -> None:
        mine: list[float] = []
        ok = bad = 0
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = bytearray()
        n = 0
        while time.monotonic() < deadline:
            payload = request_bytes(port, f"{proc:02d}{tid:03d}", n, items)
            n += 1
            started = time.perf_counter()
            sock.sendall(payload)
            status = read_reply(sock, pending)
            mine.append(time.perf_counter() - started)
            if status == 200:
                ok += 1
            else:
                bad += 1
        sock.close()
        with lock:
            latencies.extend(mine)
            acked[0] += ok
            errors[0] += bad

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((acked[0], errors[0], latencies))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait_healthy(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if read_reply(sock, bytearray()) == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the receiver did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BRONZELINE_BENCH_DSN") or os.environ.get("BRONZELINE_TEST_PG"),
                        help="superuser DSN of a PostgreSQL for the warehouse database")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--procs", type=int, default=2, help="client processes the clients are spread over")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--items", type=int, default=1, help="items per push (data_list length)")
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("give --dsn (or set BRONZELINE_BENCH_DSN / BRONZELINE_TEST_PG)")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    params = conninfo_to_dict(args.dsn)
    params["dbname"] = DB
    wh = make_conninfo(**params)  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    (tmp / "bronzeline.yml").write_text(
        "project: bench\nconnections:\n  warehouse: {dsn: \"${WAREHOUSE_DSN}\", require_tls: false}\n"
        "  pushes: {type: tracksolid_push, token: \"${PUSH_TOKEN}\", spool: ./spool, flush_seconds: 3600}\n"
        "blob:\n  url: file://./blob\ntables:\n  - {name: obd_pushes, source: pushes, endpoint: pushobd}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"WAREHOUSE_DSN": wh, "PUSH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "src")})
    base = [sys.executable, "-m", "bronzeline", "-c", str(tmp / "bronzeline.yml")]
    migrated = subprocess.run([*base, "migrate"], env=env, cwd=tmp, capture_output=True, text=True)
    if migrated.returncode != 0:
        print(f"migrate failed (bronze figures skipped): {migrated.stderr.strip().splitlines()[-1:]}")
    port = free_port()
    log = (tmp / "receive.log").open("wb")
    receiver = subprocess.Popen([*base, "receive", "--port", str(port)], env=env, cwd=tmp, stdout=log, stderr=log)
    try:
        wait_healthy(port, receiver)
        per_proc = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
        out: multiprocessing.Queue = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=client_process, args=(port, n, args.seconds, args.items, i, out))
                 for i, n in enumerate(per_proc) if n]
        began = time.monotonic()
        cpu_before = cpu_seconds(receiver.pid)
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(receiver.pid) - cpu_before
        acked = sum(r[0] for r in results)
        failed = sum(r[1] for r in results)
        latencies = [x for r in results for x in r[2]]
        flush_started = time.monotonic()
        receiver.send_signal(signal.SIGTERM)
        code = receiver.wait(timeout=600)
        flush_seconds = time.monotonic() - flush_started
    finally:
        if receiver.poll() is None:
            receiver.kill()
        log.close()
    print(f"clients {args.clients} (in {len(procs)} processes), {args.seconds:g}s, {args.items} item(s)/push, "
          f"fsync per group commit")
    print(f"acknowledged: {acked} pushes in {elapsed:.2f}s = {acked / elapsed:,.0f} pushes/s "
          f"({acked * args.items / elapsed:,.0f} items/s); non-200: {failed}")
    print(f"receiver CPU: {cpu:.2f}s over {elapsed:.2f}s ({cpu / elapsed:.0%} of one core; "
          f"{cpu / max(acked, 1) * 1e6:.0f} µs per push)")
    ms = [x * 1000 for x in latencies]
    print(f"ack latency ms: p50 {percentile(ms, 50):.2f}  p95 {percentile(ms, 95):.2f}  "
          f"p99 {percentile(ms, 99):.2f}  max {max(ms):.2f}  mean {statistics.fmean(ms):.2f}")
    rows = None
    if migrated.returncode == 0:
        with psycopg.connect(wh) as conn:
            found = conn.execute("SELECT count(*) FROM bronze.obd_pushes").fetchone()
            rows = int(found[0]) if found else 0
    print(f"stop (SIGTERM → drain, final flush into bronze): {flush_seconds:.2f}s, exit {code}; "
          f"bronze.obd_pushes rows: {rows if rows is not None else 'n/a'} (expected {acked * args.items})")
    if rows is None:  # no load path: time the source's half of a flush (claim + stream into batch lines)
        sys.path.insert(0, str(ROOT / "src"))
        from datetime import UTC, datetime

        from bronzeline.config.models import PushConfig, TableConfig
        from bronzeline.sources import SourceEnv
        from bronzeline.sources.base import Window
        from bronzeline.sources.push.source import PushSource

        source = PushSource("pushes", PushConfig(type="tracksolid_push", token=TOKEN), SourceEnv(base_dir=tmp))
        table = TableConfig.model_validate({"name": "obd_pushes", "source": "pushes", "endpoint": "pushobd"})
        started = time.monotonic()
        extract = source.extract(table, [], Window(None, datetime.now(UTC), run_id=1))
        size = sum(len(chunk) for chunk in extract)
        took = time.monotonic() - started
        print(f"spool → batch lines (claim + stream, no load): {extract.rows} lines from {extract.pushes} pushes, "
              f"{size / 1e6:.1f} MB in {took:.2f}s = {(extract.rows or 0) / took:,.0f} lines/s")
    tail = (tmp / "receive.log").read_text().strip().splitlines()[-3:]
    print("receiver log tail:", *tail, sep="\n  ")


if __name__ == "__main__":
    main()
