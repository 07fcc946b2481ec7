"""A throwaway PostgreSQL 15 cluster of its own (port, data directory), for tests that stop and restart
the server: the shared test cluster is never disturbed. Made with scripts/pg-test-cluster.sh."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.s3server import free_port

ROOT = Path(__file__).resolve().parents[2]
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else list(args)


@dataclass
class Cluster:
    directory: Path
    port: int
    dsn: str  # superuser

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres(f"{PGBIN}/pg_ctl", "-D", str(self.directory / "data"), "-w", "-t", "60", *args),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)

    def restart(self, mode: str = "fast") -> None:
        """fast: sessions are terminated (admin shutdown); immediate: as if the server crashed."""
        self._ctl("-m", mode, "-l", str(self.directory / "server.log"), "restart")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def start(self) -> None:
        self._ctl("-l", str(self.directory / "server.log"), "start")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    directory = Path(f"/tmp/bronzeline-outage-{uuid.uuid4().hex[:8]}")
    port = free_port()
    script = str(ROOT / "scripts" / "pg-test-cluster.sh")
    dsn = subprocess.run([script, "start", str(directory), str(port)], check=True, capture_output=True, text=True,
                         timeout=180).stdout.strip().splitlines()[-1]
    try:
        yield Cluster(directory, port, dsn)
    finally:
        subprocess.run([script, "stop", str(directory)], capture_output=True, timeout=120)
