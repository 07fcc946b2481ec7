"""`bronzeline receive` as a real subprocess on a loopback port, a small HTTP client for it, and a load of
concurrent pushers that records what was sent and what was acknowledged."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

TOKEN = "push-token-for-tests-0123456789"
NO_WAREHOUSE = "host=127.0.0.1 port=1 dbname=none user=none connect_timeout=1"  # refused at once


def config_text(flush_seconds: float, max_body: str = "64KB") -> str:
    return ("project: fleet\n"
            "timezone: UTC\n"
            "connections:\n"
            "  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
            "  pushes: {type: tracksolid_push, token: \"${PUSH_TOKEN}\", spool: ./spool, "
            f"flush_seconds: {flush_seconds}, max_body: {max_body}}}\n"
            "blob:\n"
            "  url: file://./blob\n"
            "tables:\n"
            "  - {name: obd_pushes, source: pushes, endpoint: pushobd}\n"
            "  - {name: platform_alarms, source: pushes, endpoint: platform_alarm}\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def form(data_list: Any, token: str | None = TOKEN) -> bytes:
    fields = {"data_list": data_list if isinstance(data_list, str) else json.dumps(data_list)}
    if token is not None:
        fields["token"] = token
    return urlencode(fields).encode()


@dataclass
class Receiver:
    """One `bronzeline receive` process (restartable on the same port)."""

    folder: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "receive.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bronzeline", "-c", str(self.folder / "bronzeline.yml"), "receive",
                 "--port", str(self.port)], env=self.env, cwd=self.folder, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"receive exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("receive did not answer /healthz in 30 s")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        status, text = self.request("POST", path, body)
        return status, json.loads(text)

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        text = self.request("GET", "/metrics")[1].decode()
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: drain, final flush; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class Pushers:
    """`threads` clients posting one-item pushes (`{"seq": "<thread>-<n>"}`) on keep-alive connections until
    stopped. A push whose reply is not 200 (the receiver died mid-request) is not sent again: it is in
    `sent` and not in `acked`."""

    def __init__(self, receiver: Receiver, threads: int = 8, path: str = "/pushobd") -> None:
        self.receiver = receiver
        self.path = path
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def __enter__(self) -> Pushers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, thread: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            seq = f"{thread}-{n}"
            n += 1
            with self._lock:
                self.sent.add(seq)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.receiver.port, timeout=10)
                conn.request("POST", self.path, body=form([{"seq": seq, "rpm": n}]),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)  # the receiver is restarting
            with self._lock:
                if ok:
                    self.acked.add(seq)
                else:
                    self.failed += 1
        if conn is not None:
            conn.close()
