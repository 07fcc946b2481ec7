"""`serve`: /healthz, /api/status, /api/runs, /metrics and the status page. Read-only.

The server reads the warehouse through one connection whose every transaction is read-only
(`default_transaction_read_only`). When `warehouse.roles.readonly` is configured and the login is a
member of it, the session also takes that role (`SET ROLE`), so the server holds only the read-only
role's privileges. A login outside that role is served read-only as itself, with a warning; to serve
as the read-only login, pass `--connection NAME` naming a connection whose login is that role.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg import sql

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, ConfigError
from bronzeline.observe import api_calls, facts, metrics, page
from bronzeline.observe.model_facts import models_json, models_view
from bronzeline.observe.slots import slots_json
from bronzeline.observe.status import status_json
from bronzeline.redact import redact
from bronzeline.text import first_line

T = TypeVar("T")
STATIC = Path(__file__).parent / "static"


def serving_config(config: Config, connection: str | None) -> Config:
    """The config with `connection` as the warehouse connection (a read-only login, say)."""
    if connection is None:
        return config
    if connection not in config.connections:
        known = ", ".join(config.connections)
        raise ConfigError(f"--connection {connection!r} is not under connections (known: {known})")
    return config.model_copy(update={"warehouse": config.warehouse.model_copy(update={"connection": connection})})


class Reader:
    """The warehouse, read-only, shared by the request threads; reconnects after a failure."""

    def __init__(self, config: Config, role: str | None) -> None:
        self.ctx = Context(config)
        self.role = role
        self.notes: list[str] = []
        self.acting_as: str | None = None
        self._lock = threading.Lock()
        self._ready: psycopg.Connection[Any] | None = None

    def _configure(self) -> None:
        conn = self.ctx.warehouse
        if conn is self._ready:
            return
        conn.execute("SET default_transaction_read_only = on")
        if self.role:
            row = conn.execute("SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
                               (self.role,)).fetchone()
            if row and row[0]:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.role)))
            elif not self.notes:
                user = conn.info.user
                state = "does not exist" if row is None else f"is not granted to {user}"
                self.notes.append(f"the read-only role {self.role} {state}; serving read-only as {user} (a DBA can "
                                  f"GRANT {self.role} TO {user}, or pass --connection with the read-only login)")
        who = conn.execute("SELECT current_user").fetchone()
        self.acting_as = str(who[0]) if who else None
        self._ready = conn

    def read(self, fn: Callable[[Context], T]) -> T:
        with self._lock:
            try:
                self._configure()
                return fn(self.ctx)
            except (psycopg.Error, BronzelineError):
                self.ctx.close()  # the next request reconnects
                self._ready = None
                raise

    def check(self) -> None:
        self.read(lambda ctx: ctx.control.session())

    def close(self) -> None:
        with self._lock:
            self.ctx.close()


class _Unavailable(Exception):
    """The warehouse did not answer (503)."""


def _error_text(exc: Exception, config: Config) -> str:
    return redact(first_line(exc), config.secrets())


def create_app(config: Config, *, role: str | None = None, history: int = 500) -> FastAPI:
    """The app. `role` is the role to SET (default: warehouse.roles.readonly)."""
    reader = Reader(config, role if role is not None else config.warehouse.roles.readonly)
    app = FastAPI(title=f"bronzeline — {config.project}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reader = reader
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @contextmanager
    def unavailable() -> Iterator[None]:
        try:
            yield
        except (psycopg.Error, BronzelineError) as exc:
            raise _Unavailable(_error_text(exc, config)) from None

    @app.exception_handler(_Unavailable)
    async def _down(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        with unavailable():
            reader.check()
        return JSONResponse({"status": "ok", "project": config.project, "role": reader.acting_as})

    @app.get("/api/status")
    def api_status() -> dict[str, Any]:
        with unavailable():
            return reader.read(lambda ctx: {"project": config.project, "tables": status_json(ctx),
                                            "models": models_json(ctx), "slots": slots_json(ctx),
                                            "api": api_calls.api_json(ctx)})

    @app.get("/api/runs")
    def api_runs(limit: int = Query(default=200, ge=1, le=5000)) -> dict[str, Any]:
        with unavailable():
            return {"project": config.project, "runs": reader.read(lambda ctx: facts.run_history(ctx, limit))}

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body = metrics.render(config.project, lambda: reader.read(facts.table_facts),
                              lambda: reader.read(models_view), lambda: reader.read(slots_json),
                              lambda: reader.read(api_calls.metrics_view))
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        try:
            data = reader.read(lambda ctx: page.gather(ctx, history))
        except (psycopg.Error, BronzelineError) as exc:
            return HTMLResponse(page.render_down(config, _error_text(exc, config)), status_code=503)
        return HTMLResponse(page.render(config, data))

    return app


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a busy port is a clear error rather than a server log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BronzelineError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                              "or --host") from None
    return sock


def serve(config: Config, host: str, port: int, *, connection: str | None = None, role: str | None = None,
          on_start: Callable[[str, Reader], None] | None = None) -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = create_app(serving_config(config, connection), role=role)
    reader: Reader = app.state.reader
    sock = listen(host, port)
    try:
        try:
            reader.check()
        except (psycopg.Error, BronzelineError):
            pass  # /healthz says 503 until the warehouse answers
        if on_start is not None:
            shown = f"[{host}]" if ":" in host else host
            on_start(f"http://{shown}:{sock.getsockname()[1]}/", reader)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()
        reader.close()
