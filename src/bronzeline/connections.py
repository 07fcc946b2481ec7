"""Open PostgreSQL connections with clear errors, TLS policy and no secret in any message."""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bronzeline.config.models import ConnectionConfig
from bronzeline.errors import BronzelineError
from bronzeline.redact import dsn_password, redact

APPLICATION_NAME = "bronzeline"
_STRICT_SSL = {"require", "verify-ca", "verify-full"}


def is_loopback(host: str | None) -> bool:
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(
    name: str,
    cfg: ConnectionConfig,
    error: type[BronzelineError],
    *,
    autocommit: bool = True,
    purpose: str = "",
) -> psycopg.Connection[Any]:
    """Connect to connection `name`; raise `error` (a BronzelineError subclass) on failure."""
    secret = dsn_password(cfg.dsn)
    try:
        params = conninfo_to_dict(cfg.dsn)
    except psycopg.ProgrammingError:
        # libpq's own message quotes the part it could not parse, which may be the password.
        raise error(f"connection {name!r}: the dsn is not valid; write a libpq string such as "
                    "'host=… dbname=… user=…' or a postgresql:// URL (percent-encode special characters)") from None
    host = str(params.get("host") or "")
    sslmode = str(params.get("sslmode") or "")
    remote = bool(host) and not all(is_loopback(h) for h in host.split(","))
    if cfg.require_tls and remote and sslmode in {"disable", "allow"}:
        raise error(f"connection {name!r}: sslmode={sslmode} to a non-loopback host; use sslmode=require "
                    "(or set require_tls: false on the connection if the network is trusted)")
    app = f"{APPLICATION_NAME} {purpose}".strip()
    try:
        conn = psycopg.connect(
            cfg.dsn, autocommit=autocommit, connect_timeout=cfg.connect_timeout, application_name=app
        )
    except psycopg.Error as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, [secret])
        raise error(f"cannot connect to {name!r} ({detail}); check that the server is up and the dsn, "
                    "user and password are right") from None
    if cfg.require_tls and not is_loopback(conn.info.host) and not conn.pgconn.ssl_in_use:
        conn.close()
        raise error(f"connection {name!r} to {conn.info.host} is not encrypted; add sslmode=require to the "
                    "dsn (or set require_tls: false on the connection if the network is trusted)")
    return conn
