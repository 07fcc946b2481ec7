"""The receiver's HTTP side: the push paths, /healthz and /metrics.

A push is answered with the vendor's success body only after its entry is fsync'd to the spool. The
IoT-hub family (`/pushgps`, `/pushobd`, …) posts the form fields `token` and `data_list`; the open
platform's own push posts `msgType` and `data` to `/push`, with the token as the query parameter `token`
(that family has no token field). Tokens are compared in constant time against every push connection's
token. Refusals (401, 404, 413) store nothing; a malformed body is stored and acknowledged, so the platform
does not send it again for ever, and counted.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from bronzeline.receive.metrics import CONTENT_TYPE, ReceiverMetrics
from bronzeline.receive.segments import Entry, new_push_id
from bronzeline.receive.spool import SpoolError, SpoolWriter
from bronzeline.sources.push.records import PLATFORM_ENDPOINTS, PLATFORM_PATH, platform_endpoint, problem

SUCCESS = b'{"code":0,"msg":"success"}'


@dataclass
class PushConnection:
    """One `type: tracksolid_push` connection as the receiver serves it."""

    name: str
    token: bytes
    max_body: int
    tables: dict[str, str]  # endpoint -> the table that reads it
    writer: SpoolWriter
    paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.paths = {PLATFORM_PATH if e in PLATFORM_ENDPOINTS else f"/{e}" for e in self.tables}


class Routes:
    def __init__(self, connections: list[PushConnection]) -> None:
        self.connections = connections

    def serves(self, path: str) -> bool:
        return any(path in c.paths for c in self.connections)

    def max_body(self, path: str) -> int:
        return max(c.max_body for c in self.connections if path in c.paths)

    def authenticate(self, token: str | None) -> PushConnection | None:
        """The connection whose token this is. Every token is compared, in constant time each, so the
        answer's timing says nothing about how much of a token matched, nor which connection came close."""
        given = (token or "").encode()
        found: PushConnection | None = None
        for conn in self.connections:
            if hmac.compare_digest(given, conn.token) and token is not None:
                found = found or conn
        return found


def _reply(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"code": status, "msg": message}).encode()


class ReceiverApp:
    """The receiver as an ASGI app: POSTs go to the push handler — plain ASGI, since it is the hot path and
    a framework's routing and dependency resolution would cost more than the push itself — and everything
    else (/healthz, /metrics) to a FastAPI app."""

    def __init__(self, routes: Routes, metrics: ReceiverMetrics, health: Callable[[], dict[str, Any]]) -> None:
        self.routes = routes
        self.metrics = metrics
        self.web = _web_app(metrics, health)
        self._spooled: dict[str, Any] = {}  # label children, looked up once per endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.web(scope, receive, send)
            return
        started = time.perf_counter()
        status, body = await self._push(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        if status == 200:
            self.metrics.ack_seconds.observe(time.perf_counter() - started)

    async def _push(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        metrics, path = self.metrics, str(scope["path"])
        name = path[1:]
        if not self.routes.serves(path):
            metrics.rejected.labels("unknown_path").inc()
            return _reply(404, f"no table reads pushes to {path}: give a table of a tracksolid_push connection "
                               f"`endpoint: {name}` (the platform's own push comes to {PLATFORM_PATH})")
        metrics.received.labels(name).inc()
        limit = self.routes.max_body(path)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        body = None if declared.isdigit() and int(declared) > limit else await _read_capped(receive, limit)
        if body is None:
            metrics.rejected.labels("too_large").inc()
            return _reply(413, f"the body is larger than {limit} bytes; nothing was stored")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        token = form.pop("token", None)
        if token is None:
            token = dict(parse_qsl(scope.get("query_string", b"").decode("utf-8", "replace"))).get("token")
        conn = self.routes.authenticate(token)
        if conn is None:
            metrics.rejected.labels("unauthorized").inc()
            return _reply(401, "wrong or missing token; nothing was stored")
        if len(body) > conn.max_body:
            metrics.rejected.labels("too_large").inc()
            return _reply(413, f"the body is larger than {conn.max_body} bytes; nothing was stored")
        endpoint = platform_endpoint(form.get("msgType")) if path == PLATFORM_PATH else name
        if endpoint not in conn.tables:
            metrics.rejected.labels("unknown_path").inc()
            return _reply(404, f"no table of connection {conn.name} reads {endpoint} pushes; nothing was stored")
        client = scope.get("client")
        entry = Entry(new_push_id(), path, endpoint, datetime.now(UTC), str(client[0]) if client else None, form)
        try:
            await conn.writer.append(entry)
        except SpoolError as exc:
            metrics.rejected.labels("not_stored").inc()
            return _reply(503, f"{exc}; send it again")
        spooled = self._spooled.get(endpoint)
        if spooled is None:
            spooled = self._spooled[endpoint] = metrics.spooled.labels(endpoint)
        spooled.inc()
        if problem(endpoint, form) is not None:
            metrics.malformed.labels(endpoint).inc()
        return 200, SUCCESS


async def _read_capped(receive: Receive, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; its push is answered to nobody
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _web_app(metrics: ReceiverMetrics, health: Callable[[], dict[str, Any]]) -> FastAPI:
    """`health()` returns the /healthz body; its "status" is "ok" or the reason the receiver cannot store."""
    app = FastAPI(title="bronzeline receive", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        body = health()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
