"""The Tracksolid open-platform client: signs every call, keeps one access token per connection (cached
in the ledger, refreshed before it expires, a full login when refresh fails, one retry with a new token on
code 1004), backs off on code 1006 with full jitter, keeps a call budget, and records every attempt in the
call log. Decisions are taken on codes and types, never on message text; tokens and secrets never appear in
messages, errors or call rows."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from bronzeline.config.models import TracksolidConfig, parse_interval
from bronzeline.errors import ConfigError, SourceError, SourceRefused, SourceUnreachable, Terminal, Transient
from bronzeline.redact import redact
from bronzeline.sources.api.ledger import ApiLedger, CallRecord, Token
from bronzeline.sources.tracksolid.signing import platform_time, sign
from bronzeline.sources.tracksolid.transport import HttpReply, Transport, is_loopback

LOGIN, REFRESH = "jimi.oauth.token.get", "jimi.oauth.token.refresh"
OK, BAD_PARAMS, ILLEGAL_USER, BAD_TOKEN, TOO_FREQUENT = 0, 1001, 1002, 1004, 1006
BUSY_CODES = frozenset({-1, 1005})  # system busy, IP access over its limit: outages, not mistakes


@dataclass(frozen=True)
class Reply:
    code: int
    message: str
    result: Any
    data: Any
    http_status: int
    server_date: datetime | None  # the platform's clock (its Date header), if it sent one

    @property
    def rows(self) -> int:
        """Records the reply carries (result rows, or `data.rows` for the report methods)."""
        for part in (self.result, self.data if isinstance(self.data, dict) else None):
            if isinstance(part, list):
                return len(part)
            if isinstance(part, dict):
                rows = part.get("rows")
                return len(rows) if isinstance(rows, list) else 1
        return 0


class ApiCallError(SourceError, Terminal):
    """The platform answered a call with a code that another attempt would not change."""

    def __init__(self, connection: str, method: str, code: int, message: str) -> None:
        hint = _HINTS.get(code, "")
        super().__init__(f"source {connection!r}: {method} failed with code {code}: {message}{hint}")
        self.method, self.code, self.platform_message = method, code, message


# What a code most often means for a call bronzeline made (the platform's documented codes).
_HINTS = {1001: " (a parameter or signature error: check the connection's app_key, app_secret and url)",
          1002: " (an illegal user or device: check targets and that the device is still active)",
          1007: " (a wrong request method: check the connection's url)"}


class ApiBusy(SourceError, Transient):
    """The platform kept refusing a call for frequency (1006 after every retry) or said it was busy."""

    def __init__(self, connection: str, method: str, code: int, message: str) -> None:
        super().__init__(f"source {connection!r}: {method} refused with code {code} ({message}); "
                         "run again later, or lower calls_per_minute")
        self.method, self.code = method, code


class CallBudgetExceeded(SourceError, Terminal):
    """The run would make more calls than `max_calls_per_run` allows."""


class CallCancelled(SourceError):
    """The run's timeout cancelled the source between two calls."""


def _code(value: Any) -> int:
    # the doc's error examples show the code as a string
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class TracksolidClient:
    def __init__(self, connection: str, cfg: TracksolidConfig, ledger: ApiLedger | None = None, *,
                 rng: Callable[[float, float], float] | None = None) -> None:
        split = urlsplit(cfg.url)
        if cfg.require_tls and split.scheme == "http" and not is_loopback(split.hostname or ""):
            raise ConfigError(f"connection {connection!r}: url {cfg.url} is plain http to {split.hostname}; "
                              "use https://, or set require_tls: false for a trusted network")
        self.connection, self.cfg, self.ledger = connection, cfg, ledger
        self._http = Transport(cfg.url, parse_interval(cfg.timeout).total_seconds())
        self._uniform = rng or random.uniform
        self._token: Token | None = None
        self._lock = threading.RLock()  # one call at a time on the one connection
        self._cancelled = threading.Event()
        self._refresh_before = parse_interval(cfg.refresh_before)
        self._backoff = parse_interval(cfg.rate_limit_backoff).total_seconds()
        self._max_backoff = parse_interval(cfg.rate_limit_max_backoff).total_seconds()
        self._bucket, self._bucket_at = float(cfg.calls_per_minute or 0), time.monotonic()
        self._run_calls: dict[int | None, int] = {}
        self._clock: tuple[datetime, float] | None = None

    def __repr__(self) -> str:
        return f"TracksolidClient({self.connection!r}, {self.cfg.url!r})"

    # ------------------------------------------------------------------ public
    def call(self, method: str, params: dict[str, Any], *, target: str | None = None, imeis: int = 0,
             table_name: str | None = None, run_id: int | None = None) -> Reply:
        """One data call with its private params; the reply of code 0, or an error by code."""
        ctx = _Ctx(target, imeis, table_name, run_id)
        with self._lock:
            reply = self._send(method, params, ctx, with_token=True)
            if reply.code == BAD_TOKEN:  # the platform no longer takes the token: a new one, once
                self._forget_token()
                ctx.retry += 1
                reply = self._send(method, params, ctx, with_token=True)
            if reply.code != OK:
                raise self._error(method, reply)
            return reply

    def server_clock(self) -> datetime | None:
        """The platform's clock as of now (its last Date header moved on by the time since), or None."""
        if self._clock is None:
            return None
        date, at = self._clock
        return date + timedelta(seconds=time.monotonic() - at)

    def reset_cancel(self) -> None:
        self._cancelled.clear()

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ tokens
    def _access_token(self, ctx: _Ctx) -> str:
        token = self._token
        if token is None and self.ledger is not None:
            token = self.ledger.load_token(self.connection, self.cfg.user_id)
        if token is not None:
            # a short-lived token is refreshed at half its life, not refresh_before (that would be at once)
            margin = min(self._refresh_before, (token.expires_at - token.obtained_at) / 2)
            if token.expires_at - datetime.now(UTC) <= margin:
                token = self._refresh(token, ctx)
        if token is None:
            token = self._login(ctx)
        self._token = token
        return token.access_token

    def _refresh(self, token: Token, ctx: _Ctx) -> Token | None:
        reply = self._send(REFRESH, {"access_token": token.access_token, "refresh_token": token.refresh_token,
                                     "expires_in": self.cfg.token_expires_in}, ctx, with_token=False)
        if reply.code != OK:  # refresh refused (expired refresh token, revoked…): a full login instead
            self._forget_token()
            return None
        return self._keep(reply, REFRESH)

    def _login(self, ctx: _Ctx) -> Token:
        reply = self._send(LOGIN, {"user_id": self.cfg.user_id, "user_pwd_md5": self.cfg.password_md5,
                                   "expires_in": self.cfg.token_expires_in}, ctx, with_token=False)
        if reply.code == ILLEGAL_USER:
            raise SourceRefused(f"source {self.connection!r}: the platform refused the login of {self.cfg.user_id!r} "
                                f"(code {reply.code}: {self._safe(reply.message)}); check user_id and password_md5 "
                                "(the lower-case MD5 of the password)")
        if reply.code == BAD_PARAMS:
            raise SourceRefused(f"source {self.connection!r}: the platform refused the login request (code "
                                f"{reply.code}: {self._safe(reply.message)}); check app_key and app_secret (a wrong "
                                "secret makes every signature invalid) and that url is the account's region")
        if reply.code != OK:
            raise self._error(LOGIN, reply)
        return self._keep(reply, LOGIN)

    def _keep(self, reply: Reply, method: str) -> Token:
        result = reply.result if isinstance(reply.result, dict) else {}
        try:
            access, refresh = str(result["accessToken"]), str(result.get("refreshToken") or "")
            lifetime = int(result.get("expiresIn") or self.cfg.token_expires_in)  # a string in the doc's table
        except (KeyError, TypeError, ValueError):
            raise ApiCallError(self.connection, method, reply.code, "the reply carries no usable token") from None
        now = datetime.now(UTC)
        token = Token(access, refresh, now + timedelta(seconds=lifetime), now)
        if self.ledger is not None:
            self.ledger.save_token(self.connection, self.cfg.user_id, token)
        return token

    def _forget_token(self) -> None:
        self._token = None
        if self.ledger is not None:
            self.ledger.drop_token(self.connection, self.cfg.user_id)

    # ------------------------------------------------------------------ sending
    def _send(self, method: str, params: dict[str, Any], ctx: _Ctx, *, with_token: bool) -> Reply:
        """Send until the platform stops answering 1006 (then ApiBusy); any other code is returned."""
        limited = 0
        while True:
            token = self._access_token(ctx) if with_token else None
            reply = self._attempt(method, params, token, ctx)
            if reply.code != TOO_FREQUENT:
                return reply
            if limited >= self.cfg.rate_limit_retries:
                raise ApiBusy(self.connection, method, reply.code, self._safe(reply.message))
            # full jitter: anywhere up to the doubled ceiling, so clients refused together spread out
            ceiling = min(self._max_backoff, self._backoff * 2 ** limited)
            limited += 1
            ctx.retry += 1
            if self._cancelled.wait(self._uniform(0.0, ceiling)):
                raise CallCancelled(f"source {self.connection!r}: cancelled while backing off from {method}")

    def _attempt(self, method: str, private: dict[str, Any], token: str | None, ctx: _Ctx) -> Reply:
        if self._cancelled.is_set():
            raise CallCancelled(f"source {self.connection!r}: cancelled before {method}")
        self._spend(ctx.run_id, method)
        params = {"method": method, "timestamp": platform_time(datetime.now(UTC)), "app_key": self.cfg.app_key,
                  "sign_method": "md5", "v": "1.0", "format": "json"}
        if token is not None:
            params["access_token"] = token
        params.update({k: str(v) for k, v in private.items() if v is not None and str(v) != ""})
        params["sign"] = sign(params, self.cfg.app_secret)
        called_at, started = datetime.now(UTC), time.monotonic()
        try:
            raw = self._http.post(urlencode(params).encode())
        except (OSError, http.client.HTTPException) as exc:
            message = self._safe(f"{type(exc).__name__}: {exc}")
            self._record(method, ctx, None, message, None, started, 0, called_at)
            raise SourceUnreachable(f"source {self.connection!r}: {method} got no answer from {self.cfg.url}: "
                                    f"{message}; run again when the platform is reachable") from None
        reply = self._decode(method, raw)
        self._record(method, ctx, reply.code, self._safe(reply.message), raw.status, started, reply.rows, called_at)
        return reply

    def _decode(self, method: str, raw: HttpReply) -> Reply:
        if raw.date is not None:
            self._clock = (raw.date, time.monotonic())
        if raw.status >= 500 or raw.status == 429:
            raise SourceUnreachable(f"source {self.connection!r}: {method} got HTTP {raw.status} from "
                                    f"{self.cfg.url}; run again later")
        if raw.status != 200:
            raise SourceRefused(f"source {self.connection!r}: {method} got HTTP {raw.status} from {self.cfg.url}; "
                                "check url (the account's region, ending in /route/rest)")
        try:
            body = json.loads(raw.body)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            raise SourceUnreachable(f"source {self.connection!r}: {method} answered something that is not the "
                                    "platform's JSON envelope; run again later") from None
        return Reply(_code(body.get("code")), str(body.get("message") or ""), body.get("result"), body.get("data"),
                     raw.status, raw.date)

    def _spend(self, run_id: int | None, method: str) -> None:
        """The run's call budget (raises before the call) and the per-minute budget (waits)."""
        cap = self.cfg.max_calls_per_run
        made = self._run_calls.get(run_id, 0)
        if cap is not None and made >= cap:
            raise CallBudgetExceeded(f"source {self.connection!r}: the run made its {cap} calls (max_calls_per_run) "
                                     f"before {method}; raise max_calls_per_run or read fewer tables per run")
        self._run_calls[run_id] = made + 1
        per_minute = self.cfg.calls_per_minute
        if per_minute is None:
            return
        rate = per_minute / 60.0
        while True:
            at = time.monotonic()
            self._bucket = min(float(per_minute), self._bucket + (at - self._bucket_at) * rate)
            self._bucket_at = at
            if self._bucket >= 1:
                self._bucket -= 1
                return
            if self._cancelled.wait((1 - self._bucket) / rate):
                raise CallCancelled(f"source {self.connection!r}: cancelled while waiting for the call budget")

    def _record(self, method: str, ctx: _Ctx, code: int | None, message: str | None, status: int | None,
                started: float, rows: int, called_at: datetime) -> None:
        if self.ledger is None:
            return
        target = ctx.target if method not in (LOGIN, REFRESH) else self.cfg.user_id
        self.ledger.record_call(CallRecord(
            self.connection, method, target, ctx.imeis if method not in (LOGIN, REFRESH) else 0, code, message,
            status, (time.monotonic() - started) * 1000, rows, ctx.table_name, ctx.run_id, ctx.retry, called_at))

    def _error(self, method: str, reply: Reply) -> SourceError:
        message = self._safe(reply.message)
        if reply.code in BUSY_CODES:
            return ApiBusy(self.connection, method, reply.code, message)
        if reply.code == BAD_TOKEN:
            return SourceRefused(f"source {self.connection!r}: {method} refused a fresh token (code 1004: {message}); "
                                 "check that user_id may read the targets")
        return ApiCallError(self.connection, method, reply.code, message)

    def _safe(self, text: str) -> str:
        token = self._token
        secrets = [*self.cfg.secret_values()] + ([token.access_token, token.refresh_token] if token else [])
        return redact(text, secrets)


class _Ctx:
    """Who a call is for, carried into the call log of its attempts (and of any token call it needs)."""

    def __init__(self, target: str | None, imeis: int, table_name: str | None, run_id: int | None) -> None:
        self.target, self.imeis, self.table_name, self.run_id, self.retry = target, imeis, table_name, run_id, 0
