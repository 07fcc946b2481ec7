"""Open PostgreSQL connections with clear errors, TLS policy and no secret in any message."""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bronzeline.config.models import ConnectionConfig
from bronzeline.errors import (
    BronzelineError,
    SourceError,
    SourceRefused,
    SourceUnreachable,
    WarehouseError,
    WarehouseRefused,
    WarehouseUnreachable,
)
from bronzeline.redact import dsn_password, redact
from bronzeline.text import first_line

APPLICATION_NAME = "bronzeline"
# Every session, source and warehouse: values read back the way bronzeline writes and compares them.
SESSION_SETTINGS = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
                    "bytea_output": "hex"}
_STRICT_SSL = {"require", "verify-ca", "verify-full"}


def is_loopback(host: str | None) -> bool:
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_answers(dsn: str, timeout: int) -> bool:
    """libpq's PQping: True when the server accepts connections (so a failed connect was refused for
    who we are, not for an outage); False when it is down, starting up, shutting down or unreachable."""
    try:
        ping = psycopg.pq.PGconn.ping(make_conninfo(dsn, connect_timeout=int(timeout)).encode())
    except Exception:
        return False
    return bool(ping == psycopg.pq.Ping.OK)


def flavour(error: type[BronzelineError], *, transient: bool) -> type[BronzelineError]:
    """The Transient (the server did not answer) or Terminal (it refused us) flavour of a connection's
    error type, so retries decide on the type."""
    if issubclass(error, SourceError):
        return SourceUnreachable if transient else SourceRefused
    if issubclass(error, WarehouseError):
        return WarehouseUnreachable if transient else WarehouseRefused
    return error


def connect(
    name: str,
    cfg: ConnectionConfig,
    error: type[BronzelineError],
    *,
    autocommit: bool = True,
    purpose: str = "",
    settings: dict[str, str] | None = None,
    replication: bool = False,
) -> psycopg.Connection[Any]:
    """Connect to connection `name`; raise `error` (a BronzelineError subclass) on failure. `replication`
    opens a logical replication session (replication=database), which takes replication commands through
    the simple query protocol only: no session settings are sent to it."""
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
        dsn = make_conninfo(cfg.dsn, replication="database") if replication else cfg.dsn
        conn = psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=cfg.connect_timeout, application_name=app
        )
    except psycopg.Error as exc:
        detail = redact(first_line(exc), [secret])
        answers = server_answers(cfg.dsn, cfg.connect_timeout)
        # A server that answers refused this login (user, password, database, pg_hba.conf): another
        # attempt would be refused the same way. One that does not answer may be back soon.
        advice = ("the server is up: check the dsn's user, password and database, and pg_hba.conf" if answers
                  else "check that the server is up and reachable, then run again")
        raise flavour(error, transient=not answers)(f"cannot connect to {name!r} ({detail}); {advice}") from None
    if cfg.require_tls and not is_loopback(conn.info.host) and not conn.pgconn.ssl_in_use:
        conn.close()
        raise error(f"connection {name!r} to {conn.info.host} is not encrypted; add sslmode=require to the "
                    "dsn (or set require_tls: false on the connection if the network is trusted)")
    if not replication:
        apply_settings(conn, {**SESSION_SETTINGS, **(settings or {})})
    return conn


def apply_settings(conn: psycopg.Connection[Any], settings: dict[str, str]) -> None:
    """Session settings in one round trip (set_config rather than startup options, which poolers
    such as PgBouncer refuse)."""
    calls = sql.SQL(", ").join(sql.SQL("set_config({}, {}, false)").format(sql.Literal(k), sql.Placeholder())
                               for k in settings)
    conn.execute(sql.SQL("SELECT {}").format(calls), list(settings.values()))
