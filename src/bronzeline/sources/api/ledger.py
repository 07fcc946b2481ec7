"""The seam between API sources and the warehouse's control tables: the cached access token
(`api_tokens`) and the call log (`api_calls`). The warehouse implements it; sources only see this."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Token:
    access_token: str
    refresh_token: str
    expires_at: datetime  # aware
    obtained_at: datetime  # aware

    def __repr__(self) -> str:  # never print a token, even in a traceback or a debugger
        return f"Token(expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True)
class CallRecord:
    connection: str
    method: str
    target: str | None  # the account (or the IMEI for one-device methods)
    imeis: int  # how many IMEIs the call carried
    code: int | None  # the platform's code (0 = success); None when no answer was read
    message: str | None  # the platform's message, or the transport error (never a secret)
    http_status: int | None
    duration_ms: float
    rows: int  # records the call returned
    table_name: str | None
    run_id: int | None
    retry: int  # 0 for the first try of a call, 1… for retries (1006 back-off, new token)
    called_at: datetime


class ApiLedger(Protocol):
    def load_token(self, connection: str, account: str) -> Token | None: ...

    def save_token(self, connection: str, account: str, token: Token) -> None: ...

    def drop_token(self, connection: str, account: str) -> None: ...

    def record_call(self, call: CallRecord) -> None: ...
