"""A source in recovery (a streaming replica) cannot see the primary's open transactions:
bronzeline refuses it unless the table sets `lookback`, and then re-reads that much."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.integration.cluster import PGBIN, Cluster, _as_postgres, throwaway_cluster
from tests.integration.pipeline import Pipeline
from tests.integration.s3server import free_port


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[Cluster, str]]:
    with throwaway_cluster() as primary:
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE fleet")
        with psycopg.connect(make_conninfo(primary.dsn, dbname="fleet"), autocommit=True) as conn:
            conn.execute("CREATE TABLE public.pings (id int PRIMARY KEY, recorded_at timestamptz NOT NULL "
                         "DEFAULT now())")
            conn.execute("INSERT INTO public.pings (id) SELECT generate_series(1, 100)")
        replica = Path(f"/tmp/bronzeline-replica-{uuid.uuid4().hex[:8]}")
        port = free_port()
        subprocess.run(["mkdir", "-p", str(replica)], check=True)
        subprocess.run(["chown", "postgres", str(replica)], check=False)
        subprocess.run(_as_postgres(f"{PGBIN}/pg_basebackup", "-d", primary.dsn, "-D", str(replica / "data"),
                                    "-R", "-X", "stream", "-c", "fast"), check=True, capture_output=True, timeout=120)
        with open(replica / "data" / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {port}\nunix_socket_directories = '{replica}'\n")
        subprocess.run(_as_postgres(f"{PGBIN}/pg_ctl", "-D", str(replica / "data"), "-w", "-l",
                                    str(replica / "server.log"), "start"), check=True, capture_output=True, timeout=90)
        try:
            params = conninfo_to_dict(primary.dsn)
            params.update(port=str(port), dbname="fleet")
            yield primary, make_conninfo(**params)  # type: ignore[arg-type]
        finally:
            subprocess.run(_as_postgres(f"{PGBIN}/pg_ctl", "-D", str(replica / "data"), "-m", "immediate", "stop"),
                           capture_output=True, timeout=90)
            subprocess.run(["rm", "-rf", str(replica)], check=False)


TABLE = "  - name: pings\n    from: public.pings\n    watermark: recorded_at\n    key: [id]\n"


def test_a_replica_is_refused_unless_lookback_is_set(pipeline: Pipeline,
                                                     primary_and_replica: tuple[Cluster, str]) -> None:
    primary, replica_dsn = primary_and_replica
    with psycopg.connect(replica_dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    pipeline.source_dsn = replica_dsn
    pipeline.write_config(TABLE)
    proc = pipeline.cli("migrate")
    assert proc.returncode == 1 and "replica" in proc.stderr and "lookback" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr

    pipeline.write_config(TABLE + "    lookback: 1 minute\n")
    pipeline.cli("migrate", check=True)
    time.sleep(0.2)
    pipeline.cli("run", check=True)
    with psycopg.connect(make_conninfo(primary.dsn, dbname="fleet"), autocommit=True) as conn:
        conn.execute("INSERT INTO public.pings (id) SELECT generate_series(101, 150)")
    deadline = time.monotonic() + 30
    with psycopg.connect(replica_dsn, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM public.pings").fetchone() != (150,):
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)
    time.sleep(0.2)
    out = pipeline.cli("run", check=True).stdout
    assert "loaded 50 of" in out  # the lookback re-reads the last minute: rows already present are skipped
    with pipeline.wh() as conn:
        assert conn.execute("SELECT count(*) FROM bronze.pings").fetchone() == (150,)
