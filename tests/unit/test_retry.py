"""Which failures are retried, and how long bronzeline waits between attempts."""

from __future__ import annotations

import errno
import random

import psycopg
import pytest
from psycopg import errors as pg

from bronzeline.config.models import RetriesConfig
from bronzeline.errors import (
    BatchError,
    ConfigError,
    SourceError,
    SourceRefused,
    SourceUnreachable,
    StoreError,
    WarehouseError,
    WarehouseRefused,
    WarehouseUnreachable,
)
from bronzeline.pipeline.attempts import backoff, classify
from bronzeline.warehouse.loader import LoadRejected


def raised_from(outer: type[Exception], inner: BaseException, *, hide: bool = True) -> Exception:
    """`outer` raised while handling `inner`, the way bronzeline wraps library errors (`from None`)."""
    try:
        try:
            raise inner
        except BaseException:
            if hide:
                raise outer("wrapped") from None
            raise outer("wrapped")  # noqa: B904 - the implicit context is what is being tested
    except Exception as exc:
        return exc
    raise AssertionError("unreachable")


def test_connection_failures_are_typed_where_they_happen() -> None:
    """connections.connect asks the server (PQping) and raises a Transient or a Terminal type; the
    libpq error it wraps (no SQLSTATE, like a lost connection) never overrides that decision."""
    refused = psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "x"')
    assert classify(raised_from(SourceRefused, refused)) == "terminal"
    assert classify(raised_from(WarehouseRefused, refused, hide=False)) == "terminal"
    down = psycopg.OperationalError("connection failed: Connection refused")
    assert classify(raised_from(SourceUnreachable, down)) == "transient"
    assert classify(raised_from(WarehouseUnreachable, down)) == "transient"


@pytest.mark.parametrize("inner", [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.OperationalError("connection failed: Connection refused"),
    pg.SerializationFailure("could not serialize access"),
    pg.DeadlockDetected("deadlock detected"),
    pg.LockNotAvailable("canceling statement due to lock timeout"),
    pg.AdminShutdown("terminating connection due to administrator command"),
    pg.CannotConnectNow("the database system is starting up"),
    pg.TooManyConnections("sorry, too many clients already"),
    pg.ConnectionFailure("connection failure"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    TimeoutError("timed out"),
    OSError(errno.EREMOTEIO, "We encountered an internal error"),
])
def test_transient(inner: BaseException) -> None:
    for outer in (SourceError, WarehouseError, StoreError):
        assert classify(raised_from(outer, inner)) == "transient"
        assert classify(raised_from(outer, inner, hide=False)) == "transient"


@pytest.mark.parametrize("inner", [
    pg.UndefinedTable('relation "tracksolid.ghosts" does not exist'),
    pg.InsufficientPrivilege("permission denied for table t"),
    pg.QueryCanceled("canceling statement due to statement timeout"),
    pg.InvalidTextRepresentation("invalid input syntax for type integer"),
    FileNotFoundError(errno.ENOENT, "no such key"),
    PermissionError(errno.EACCES, "Access Denied"),
    KeyError("a bug"),
])
def test_terminal(inner: BaseException) -> None:
    for outer in (SourceError, WarehouseError, StoreError):
        assert classify(raised_from(outer, inner)) == "terminal"


def test_terminal_kinds_and_no_cause() -> None:
    assert classify(None) == "terminal"
    assert classify(ConfigError("bad key")) == "terminal"
    assert classify(SourceError("no such column")) == "terminal"
    # a batch that does not match its manifest is terminal even if a connection error is in its past
    assert classify(raised_from(BatchError, psycopg.OperationalError("lost"))) == "terminal"
    assert classify(raised_from(LoadRejected, pg.UniqueViolation("duplicate key"))) == "terminal"


class ClientError(Exception):
    """Shaped like botocore's ClientError: a response with the HTTP status and the S3 error code."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class EndpointConnectionError(Exception):
    """Shaped like botocore's: recognised by name, without importing botocore."""


@pytest.mark.parametrize(("exc", "kind"), [
    (ClientError(500, "InternalError"), "transient"),
    (ClientError(503, "SlowDown"), "transient"),
    (ClientError(400, "RequestTimeout"), "transient"),
    (ClientError(403, "AccessDenied"), "terminal"),
    (ClientError(404, "NoSuchBucket"), "terminal"),
    (EndpointConnectionError("could not connect"), "transient"),
])
def test_object_store_errors(exc: Exception, kind: str) -> None:
    assert classify(raised_from(StoreError, exc, hide=False)) == kind


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetriesConfig(attempts=6, backoff_seconds=2, max_backoff_seconds=10)
    rng = random.Random(1)
    for attempt, base in ((1, 2), (2, 4), (3, 8), (4, 10), (5, 10)):
        delays = [backoff(policy, attempt, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 4  # jitter spreads retries out
    assert backoff(RetriesConfig(backoff_seconds=0), 3, rng) == 0


def test_retries_config_defaults_and_bounds() -> None:
    policy = RetriesConfig()
    assert (policy.attempts, policy.backoff_seconds, policy.max_backoff_seconds) == (3, 2.0, 60.0)
    with pytest.raises(ValueError):
        RetriesConfig(attempts=0)


def test_table_timeout_is_an_interval() -> None:
    from datetime import timedelta

    from bronzeline.config.models import TableConfig

    table = TableConfig.model_validate({"name": "t", "from": "s.t", "watermark": "w", "key": ["id"], "timeout": "2h"})
    assert table.timeout_interval == timedelta(hours=2)
    assert TableConfig.model_validate({"name": "t", "from": "s.t", "mode": "snapshot"}).timeout_interval is None
    with pytest.raises(ValueError, match="not an interval"):
        TableConfig.model_validate({"name": "t", "from": "s.t", "mode": "snapshot", "timeout": "soon"})
