"""The open platform's request signature: MD5 over the app secret, every non-empty parameter but `sign`
as key immediately followed by value in ascending key order, and the secret again; 32 upper-case hex."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # every time the platform takes or returns (UTC), but parking's ISO rows


def sign(params: dict[str, str], secret: str) -> str:
    """The `sign` parameter for these parameters. Empty values are skipped, as the vendor's reference code
    does (so the client never sends them either); the comparison's case is not documented: upper case, as
    every client sends it."""
    body = "".join(f"{key}{params[key]}" for key in sorted(params) if key != "sign" and params[key] != "")
    return hashlib.md5(f"{secret}{body}{secret}".encode()).hexdigest().upper()


def platform_time(value: datetime) -> str:
    """An aware datetime as the platform writes times: `yyyy-MM-dd HH:mm:ss` in UTC."""
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def parse_platform_time(text: str) -> datetime:
    """`yyyy-MM-dd HH:mm:ss` (UTC) as an aware datetime; ValueError when it is not one."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
