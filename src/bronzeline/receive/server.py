"""`bronzeline receive`: the spools of the push connections, the flush loop, and the HTTP server around them.

While it runs the receiver holds each spool's flock. Every `flush_seconds` (and once more when it stops) it
closes the open segments and runs the push tables that have something waiting through `run_tables` — the
same path as `bronzeline run`, so the batch files, loads and run rows are the ordinary ones. SIGTERM or
SIGINT: stop accepting, answer the pushes in flight (each after its fsync), flush, exit 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from bronzeline.config.models import Config, PushConfig, TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, ConfigError
from bronzeline.receive import segments
from bronzeline.receive.app import PushConnection, ReceiverApp, Routes
from bronzeline.receive.metrics import ReceiverMetrics
from bronzeline.receive.segments import SpoolLock
from bronzeline.receive.spool import SpoolWriter
from bronzeline.redact import redact
from bronzeline.sources.push.source import spool_root
from bronzeline.text import first_line

Say = Callable[[str], None]


def push_tables(config: Config) -> dict[str, list[TableConfig]]:
    """The tables of each push connection (connections with no table are not served)."""
    found: dict[str, list[TableConfig]] = {}
    for table in config.tables:
        if isinstance(config.connections[table.source], PushConfig):
            found.setdefault(table.source, []).append(table)
    return found


class Receiver:
    """The push connections' spools: locked, leftovers sealed, a writer each."""

    def __init__(self, config: Config, metrics: ReceiverMetrics) -> None:
        self.config = config
        by_connection = push_tables(config)
        if not by_connection:
            raise ConfigError("no table reads a push connection: add a connection with `type: tracksolid_push` and "
                              "a table with `source:` naming it and `endpoint:` (e.g. pushgps)")
        self.connections: list[PushConnection] = []
        self.roots: dict[str, Path] = {}
        self.tables: list[TableConfig] = []
        for name, tables in by_connection.items():
            cfg = config.connections[name]
            assert isinstance(cfg, PushConfig)
            if not cfg.token:
                raise ConfigError(f"connections.{name}.token is empty; set it to the token agreed with the platform")
            root = spool_root(cfg, config.base_dir).resolve()
            other = next((n for n, r in self.roots.items() if r == root), None)
            if other is not None:
                raise ConfigError(f"connections {other} and {name} have the same spool {root}; give each its own")
            by_endpoint: dict[str, str] = {}
            for table in tables:
                assert table.endpoint is not None
                if table.endpoint in by_endpoint:
                    raise ConfigError(f"tables {by_endpoint[table.endpoint]} and {table.name} both read "
                                      f"{table.endpoint} from {name}: a push is stored once, for one table")
                by_endpoint[table.endpoint] = table.name
            self.roots[name] = root
            self.tables += tables
            writer = SpoolWriter(root, segment_seconds=max(60.0, 10 * cfg.flush_seconds), on_commit=metrics.on_commit)
            self.connections.append(PushConnection(name, cfg.token.encode(), cfg.max_body_bytes, by_endpoint, writer))
        self.flush_seconds = min(c.flush_seconds for n, c in config.connections.items()
                                 if isinstance(c, PushConfig) and n in self.roots)
        self._locks: list[SpoolLock] = []

    def open(self) -> None:
        for name, root in self.roots.items():
            lock = SpoolLock(root)
            if not lock.acquire(wait_seconds=10.0):
                self.close()
                raise BronzelineError(f"another `bronzeline receive` holds the spool {root} (connection {name}); "
                                      "stop it first, or give this config its own spool")
            self._locks.append(lock)
            segments.seal_leftovers(root)
        for conn in self.connections:
            conn.writer.start()

    def seal(self) -> None:
        for conn in self.connections:
            conn.writer.seal()

    def ready_tables(self) -> list[str]:
        return [t.name for t in self.tables if t.endpoint and segments.has_ready(self.roots[t.source], t.endpoint)]

    def close(self) -> None:
        """Make every submitted push durable, close the segments, release the locks."""
        for conn in self.connections:
            conn.writer.close()
        for lock in self._locks:
            lock.release()
        self._locks.clear()

    def health(self) -> dict[str, Any]:
        dead = [c.name for c in self.connections if not c.writer.alive]
        return {"status": "ok" if not dead else f"the spool writer of {', '.join(dead)} stopped",
                "tables": [t.name for t in self.tables], "flush_seconds": self.flush_seconds}


class Flusher:
    """Loads the spooled pushes every `flush_seconds`, one flush at a time, on its own warehouse connections."""

    def __init__(self, receiver: Receiver, metrics: ReceiverMetrics, say: Say) -> None:
        self.receiver = receiver
        self.metrics = metrics
        self.say = say
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._ctx: Context | None = None
        self._thread = threading.Thread(target=self._loop, name="bronzeline-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        every = self.receiver.flush_seconds
        failures = 0
        while not self._stop.is_set():
            failures = 0 if self.flush() else failures + 1
            # A warehouse that keeps failing is tried less often (up to every 5 minutes); pushes are still
            # acknowledged meanwhile, and the first flush that works loads all of them.
            self._stop.wait(min(every * 2 ** min(failures, 10), max(every, 300.0)))

    def flush(self) -> bool:
        """Close the open segments and load what is ready; False when a table (or the warehouse) failed."""
        from bronzeline.pipeline import run_tables

        config = self.receiver.config
        with self._busy:
            try:
                self.receiver.seal()
                tables = self.receiver.ready_tables()
                if not tables:
                    return True
                self._ctx = self._ctx or Context(config)
                outcomes = run_tables(config, tables, ctx=self._ctx)
            except (BronzelineError, psycopg.Error, OSError) as exc:
                self.metrics.flushes.labels("failed").inc()
                self.say(redact(f"flush failed: {first_line(exc)}; the pushes stay spooled for the next flush",
                                config.secrets()))
                self._close_context()
                return False
            failed = False
            for outcome in outcomes:
                if outcome.status == "loaded":
                    self.metrics.loaded.labels(outcome.table).inc(outcome.rows_extracted)
                    if outcome.rows_extracted:
                        self.say(f"{outcome.table}: loaded {outcome.rows_extracted} pushed record(s) "
                                 f"({outcome.rows_loaded} new, {outcome.rows_skipped} already in bronze)")
                elif outcome.status == "failed":
                    failed = True
                    self.metrics.flush_failures.labels(outcome.table).inc()
                    self.say(f"{outcome.message}; the pushes stay spooled for the next flush")
                else:
                    self.say(outcome.message or f"{outcome.table}: skipped")
            self.metrics.flushes.labels("failed" if failed else "ok").inc()
            if failed:
                self._close_context()  # reconnect next time
            return not failed

    def _close_context(self) -> None:
        if self._ctx is not None:
            try:
                self._ctx.close()
            except (psycopg.Error, OSError):
                pass
            self._ctx = None

    def close(self) -> None:
        self._close_context()


def serve(config: Config, host: str, port: int, *, say: Say, on_start: Callable[[str, Receiver], None] | None = None,
          ) -> None:
    """Receive until SIGTERM/SIGINT, then drain and flush."""
    import uvicorn

    from bronzeline.observe.server import listen

    metrics = ReceiverMetrics()
    receiver = Receiver(config, metrics)
    sock = listen(host, port)
    try:
        receiver.open()
    except BaseException:
        sock.close()
        raise
    stopping = threading.Event()

    def note(sig: int, frame: FrameType | None) -> None:
        stopping.set()  # uvicorn takes the signals while it serves, then hands them back here

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    flusher = Flusher(receiver, metrics, say)
    try:
        flusher.start()
        app = ReceiverApp(Routes(receiver.connections), metrics, receiver.health)
        if on_start is not None:
            shown = f"[{host}]" if ":" in host else host
            on_start(f"http://{shown}:{sock.getsockname()[1]}/", receiver)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                               proxy_headers=False, timeout_graceful_shutdown=10))
        if not stopping.is_set():
            server.run(sockets=[sock])
    finally:
        sock.close()
        flusher.stop()
        receiver.close()  # every acknowledged push is in a closed segment now
        try:
            flusher.flush()
        finally:
            flusher.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
