"""The fake open platform over real HTTP: one `/route/rest` URL, the method a parameter; signature,
timestamp, token and rate-limit checks as the platform documents them (bad sign → 1001, missing or expired
token → 1004, too frequent → 1006), API errors as HTTP 200 with the JSON envelope."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bronzeline.fleet.jimi_fake.fleet import FakeDevice, FakeSettings, make_devices
from bronzeline.fleet.jimi_fake.methods import ApiError, Methods, fmt, window_bounds

TOKEN_METHODS = ("jimi.oauth.token.get", "jimi.oauth.token.refresh")
SECRET_PARAMS = ("access_token", "refresh_token", "user_pwd_md5", "sign")
_ALIASES = {"devices": "jimi.user.device.list", "device_detail": "jimi.track.device.detail",
            "live_positions": "jimi.device.location.get", "track": "jimi.device.track.list",
            "alarms": "jimi.device.alarm.list", "trips": "jimi.device.track.mileage",
            "parking": "jimi.open.platform.report.parking"}


@dataclass(frozen=True)
class CallLog:
    """One request the fake answered (tests read `FakePlatform.calls`)."""

    method: str
    code: int
    imeis: int  # IMEIs the request carried
    target: str | None  # target / account / imei parameter
    params: dict[str, str]  # the request's parameters without token, password or sign
    at: float  # time.time()


@dataclass
class _Token:
    account: str
    refresh: str
    expires: float  # time.monotonic()
    revoked: bool = False


def _their_sign(params: dict[str, str], secret: str) -> str:
    # Written apart from the client's signing on purpose: a bug there must not be mirrored here.
    pairs = sorted((k, v) for k, v in params.items() if k != "sign" and v)
    return hashlib.md5((secret + "".join(k + v for k, v in pairs) + secret).encode("utf-8")).hexdigest().upper()


class FakePlatform:
    def __init__(self, settings: FakeSettings | None = None, **overrides: Any) -> None:
        self.settings = replace(settings or FakeSettings(), **overrides)
        self.devices: list[FakeDevice] = make_devices(self.settings)
        self.methods = Methods(self.settings, self.devices)
        self.calls: list[CallLog] = []
        self._offset = 0.0
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._count = 0
        self._bucket, self._bucket_at = 0.0, time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifetime
    def start(self) -> FakePlatform:
        server = ThreadingHTTPServer((self.settings.host, self.settings.port), _Handler)
        server.request_queue_size = 128
        server.platform = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="jimi-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakePlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://{self.settings.host}:{self._server.server_address[1]}/route/rest"

    def env(self) -> dict[str, str]:
        """The environment a bronzeline config reads the fake's (fake) credentials from."""
        s = self.settings
        return {"JIMI_URL": self.url, "JIMI_APP_KEY": s.app_key, "JIMI_APP_SECRET": s.app_secret,
                "JIMI_USER_ID": s.login, "JIMI_PASSWORD_MD5": s.accounts[s.login], "JIMI_TARGETS": ",".join(s.targets)}

    # ------------------------------------------------------------------ test controls
    def now(self) -> datetime:
        """The platform's clock (what its Date header says): the machine's, moved by advance()."""
        return datetime.fromtimestamp(time.time() + self._offset, UTC)

    def advance(self, seconds: float) -> None:
        """Move the data clock (what is visible, the Date header); token lifetimes and the signature's
        timestamp check stay on the machine's clock."""
        self._offset += seconds

    def revoke_all_tokens(self) -> None:
        with self._lock:
            for tok in self._tokens.values():
                tok.revoked = True

    def tokens_issued(self) -> list[str]:
        """Every access and refresh token handed out so far (tests check none of them leaks)."""
        with self._lock:
            return [t for access, tok in self._tokens.items() for t in (access, tok.refresh)]

    def imeis_of(self, target: str | None = None) -> list[str]:
        return [d.imei for d in self.devices if target is None or d.target == target]

    def truth(self, what: str, *, imeis: list[str] | None = None, target: str | None = None,
              start: datetime | None = None, end: datetime | None = None,
              as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Exactly the records the fake serves for a method (or endpoint name) over the window
        (start, end] as of `as_of` (default: now) — as the fetchers yield them (track points carry `imei`)."""
        method = _ALIASES.get(what, what)
        now = int((as_of or self.now()).timestamp())
        chosen = imeis if imeis is not None else self.imeis_of(target)
        low, high = window_bounds(start, end) if start is not None and end is not None else (0, now)
        return self.methods.truth(method, chosen, low, high, now)

    # ------------------------------------------------------------------ requests
    def handle(self, params: dict[str, str]) -> dict[str, Any]:
        method = params.get("method", "")
        try:
            result, data = self._dispatch(method, params)
            body: dict[str, Any] = {"code": 0, "message": "success", "result": result, "data": data}
        except ApiError as exc:
            body = {"code": exc.code, "message": exc.message, "result": None, "data": None}
        imeis = params.get("imeis") or params.get("imei") or ""
        shown = {k: v for k, v in params.items() if k not in SECRET_PARAMS}
        with self._lock:
            self.calls.append(CallLog(method, body["code"], len([i for i in imeis.split(",") if i]),
                                      params.get("target") or params.get("account") or params.get("imei"),
                                      shown, time.time()))
        return body

    def _dispatch(self, method: str, params: dict[str, str]) -> tuple[Any, Any]:
        self._rate_limit()
        s = self.settings
        for name in ("method", "timestamp", "app_key", "sign_method", "v", "format"):
            if not params.get(name):
                raise ApiError(1001, f"Parameter error: {name} is missing")
        if params["app_key"] != s.app_key:
            raise ApiError(1001, "Missing AppKey")
        if params["v"] not in ("1.0", "0.9") or params["sign_method"] != "md5" or params["format"] != "json":
            raise ApiError(1001, "Parameter error: v, sign_method or format")
        try:
            stamp = calendar.timegm(time.strptime(params["timestamp"], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            raise ApiError(1001, "Parameter error: timestamp") from None
        if s.check_timestamp and abs(stamp - time.time()) > 600:
            raise ApiError(1001, "Parameter error: timestamp is out of range")
        if params["v"] == "1.0" and not hmac.compare_digest(params.get("sign", ""), _their_sign(params, s.app_secret)):
            raise ApiError(1001, "Parameter error: sign is invalid")
        now = int(time.time() + self._offset)
        if method == "jimi.oauth.token.get":
            return self._login(params, now), None
        if method == "jimi.oauth.token.refresh":
            return self._refresh(params, now), None
        handler = self.methods.table.get(method)
        if handler is None:
            raise ApiError(1001, "Parameter error: method")
        self._account(params.get("access_token", ""))
        return handler(params, now)

    def _rate_limit(self) -> None:
        s = self.settings
        with self._lock:
            self._count += 1
            if s.rate_limit_every and (self._count - 1) % s.rate_limit_every >= s.rate_limit_every - s.rate_limit_burst:
                raise ApiError(1006, "too frequent requests")
            if s.rate_limit_per_second:
                at = time.monotonic()
                self._bucket = min(max(1.0, s.rate_limit_per_second),
                                   self._bucket + (at - self._bucket_at) * s.rate_limit_per_second)
                self._bucket_at = at
                if self._bucket < 1:
                    raise ApiError(1006, "too frequent requests")
                self._bucket -= 1

    def _issue(self, account: str, ttl: float, now: int) -> dict[str, Any]:
        access, refresh = uuid.uuid4().hex, uuid.uuid4().hex
        self._tokens[access] = _Token(account, refresh, time.monotonic() + ttl)
        return {"appKey": self.settings.app_key, "account": account, "accessToken": access, "refreshToken": refresh,
                "expiresIn": max(1, math.floor(ttl)), "time": fmt(now)}

    def _ttl(self, params: dict[str, str]) -> float:
        try:
            asked = int(params.get("expires_in") or 7200)
        except ValueError:
            raise ApiError(1001, "Parameter error: expires_in") from None
        if not 60 <= asked <= 7200:
            raise ApiError(1001, "Parameter error: expires_in")
        return self.settings.token_ttl_seconds or float(asked)

    def _login(self, params: dict[str, str], now: int) -> dict[str, Any]:
        user, pwd = params.get("user_id", ""), params.get("user_pwd_md5", "").lower()
        known = self.settings.accounts.get(user)
        if known is None or not hmac.compare_digest(known.lower(), pwd):
            raise ApiError(1002, "Incorrect user name or password")
        ttl = self._ttl(params)
        with self._lock:
            return self._issue(user, ttl, now)

    def _refresh(self, params: dict[str, str], now: int) -> dict[str, Any]:
        ttl = self._ttl(params)
        with self._lock:
            tok = self._tokens.get(params.get("access_token", ""))
            # an expired access token can still be refreshed; the old one is revoked [inf]
            if self.settings.fail_refresh or tok is None or tok.revoked or tok.refresh != params.get("refresh_token"):
                raise ApiError(1004, "Illegal request, token is invalid")
            tok.revoked = True
            return self._issue(tok.account, ttl, now)

    def _account(self, access: str) -> str:
        with self._lock:
            tok = self._tokens.get(access)
            if tok is None or tok.revoked or tok.expires <= time.monotonic():
                raise ApiError(1004, "illegal access, token exception (expired or nonexistent)")
            return tok.account


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse the connection
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for a delayed ACK
    timeout = 60

    def date_time_string(self, timestamp: float | None = None) -> str:
        platform: FakePlatform = self.server.platform  # type: ignore[attr-defined]
        return formatdate(platform.now().timestamp() if timestamp is None else timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and bench read the call log
        pass

    def do_GET(self) -> None:
        self._answer(b"", "")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(body, self.headers.get("Content-Type") or "")

    def _answer(self, body: bytes, content_type: str) -> None:
        split = urlsplit(self.path)
        if split.path != "/route/rest":
            self._send(404, b'{"error":"not found"}')
            return
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if content_type.startswith("application/x-www-form-urlencoded"):  # JSON bodies are not read [inf]
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        platform: FakePlatform = self.server.platform  # type: ignore[attr-defined]
        reply = platform.handle(params)
        self._send(200, json.dumps(reply, separators=(",", ":")).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
