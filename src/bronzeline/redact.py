"""Keep secrets out of messages, logs, run rows and files."""

from __future__ import annotations

import re
from collections.abc import Iterable

from psycopg.conninfo import conninfo_to_dict

_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def dsn_password(dsn: str) -> str | None:
    """The password written into a DSN, if any (also from a DSN libpq cannot parse)."""
    try:
        return conninfo_to_dict(dsn).get("password") or None  # type: ignore[return-value]
    except Exception:
        url = re.match(r"^postgres(?:ql)?://[^:/@\s]*:([^@]*)@", dsn)
        if url:
            return url.group(1) or None
        kv = re.search(r"password\s*=\s*(.*)$", dsn, re.IGNORECASE)
        return kv.group(1).strip() or None if kv else None


def safe_dsn(dsn: str) -> str:
    """A DSN with its password masked, for messages."""
    return redact(dsn, [])


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Mask known secret values and any password written into a DSN-like string."""
    out = _URL_PASSWORD.sub(r"\1***\3", text)
    out = _KV_PASSWORD.sub(r"\1***", out)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, "***")
    return out
