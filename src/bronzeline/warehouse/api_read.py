"""Reads of the API call log (`<control>.api_calls`): per connection over the last 24 hours, per day over the
last 7, and per method for /metrics. status, the page and /metrics read through these; the writes are in
api_ledger.py.

A failure is a call whose code is not 0, including calls that got no answer (code NULL); rate limited is
code 1006; a token renewal is a call of `jimi.oauth.token.get` or `.refresh`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from bronzeline.text import iso

Conn = psycopg.Connection[Any]
RATE_LIMITED = 1006
RENEWAL_METHODS = ("jimi.oauth.token.get", "jimi.oauth.token.refresh")
OUTCOMES = ("ok", "error", "rate_limited")


@dataclass(frozen=True)
class ConnectionCalls:
    """One connection's calls started in the last 24 hours."""

    connection: str
    calls_24h: int
    failures_24h: int
    rate_limited_24h: int
    renewals_24h: int
    rows_24h: int
    avg_ms: float | None
    p95_ms: float | None
    last_call_at: datetime | None  # the latest call ever logged, not only in 24 h
    last_error: str | None  # the latest failed call in 24 h: "<code> <message>"

    def as_json(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DailyCalls:
    """One connection's calls on one day (in the config's time zone)."""

    connection: str
    day: date
    calls: int
    failures: int
    rate_limited: int
    rows: int
    avg_ms: float | None

    def as_json(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class MethodCalls:
    """Calls of one method in the last 24 hours by outcome (error excludes rate limited)."""

    connection: str
    method: str
    ok: int
    error: int
    rate_limited: int


_CONNECTIONS_SQL = """
WITH recent AS (
    SELECT * FROM {calls} WHERE called_at > now() - interval '24 hours'
), names AS (
    SELECT unnest(%(names)s::text[]) AS connection UNION SELECT connection FROM recent
)
SELECT n.connection,
       count(r.call_id)::int AS calls_24h,
       count(r.call_id) FILTER (WHERE r.code IS DISTINCT FROM 0)::int AS failures_24h,
       count(r.call_id) FILTER (WHERE r.code = %(rate_limited)s)::int AS rate_limited_24h,
       count(r.call_id) FILTER (WHERE r.method = ANY(%(renewals)s))::int AS renewals_24h,
       coalesce(sum(r.rows), 0)::bigint AS rows_24h,
       round(avg(r.duration_ms)::numeric, 1)::float8 AS avg_ms,
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms))::numeric, 1)::float8 AS p95_ms,
       coalesce(max(r.called_at),  -- older calls only when none in 24 h (a backward scan of the time index)
                (SELECT a.called_at FROM {calls} a WHERE a.connection = n.connection
                  ORDER BY a.called_at DESC LIMIT 1)) AS last_call_at,
       (SELECT concat_ws(' ', f.code, f.message) FROM recent f
         WHERE f.connection = n.connection AND f.code IS DISTINCT FROM 0
         ORDER BY f.called_at DESC, f.call_id DESC LIMIT 1) AS last_error
FROM names n LEFT JOIN recent r ON r.connection = n.connection
GROUP BY n.connection
ORDER BY n.connection
"""

_DAILY_SQL = """
SELECT connection, (called_at AT TIME ZONE %(tz)s)::date AS day, count(*)::int AS calls,
       count(*) FILTER (WHERE code IS DISTINCT FROM 0)::int AS failures,
       count(*) FILTER (WHERE code = %(rate_limited)s)::int AS rate_limited,
       coalesce(sum(rows), 0)::bigint AS rows, round(avg(duration_ms)::numeric, 1)::float8 AS avg_ms
FROM {calls}
WHERE called_at >= ((now() AT TIME ZONE %(tz)s)::date - %(days)s + 1)::timestamp AT TIME ZONE %(tz)s
GROUP BY 1, 2
ORDER BY 2, 1
"""

_METHODS_SQL = """
SELECT connection, method,
       count(*) FILTER (WHERE code = 0)::int AS ok,
       count(*) FILTER (WHERE code IS DISTINCT FROM 0 AND code IS DISTINCT FROM %(rate_limited)s)::int AS error,
       count(*) FILTER (WHERE code = %(rate_limited)s)::int AS rate_limited
FROM {calls}
WHERE called_at > now() - interval '24 hours'
GROUP BY 1, 2
ORDER BY 1, 2
"""


class ApiCallReader:
    """Reads of the call log through one warehouse connection."""

    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _calls(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier("api_calls"))

    def connections(self, names: list[str]) -> list[ConnectionCalls]:
        """Each of `names` (the configured API connections, shown even without calls) and every other
        connection with calls in the last 24 hours."""
        with self.conn.cursor(row_factory=class_row(ConnectionCalls)) as cur:
            cur.execute(sql.SQL(_CONNECTIONS_SQL).format(calls=self._calls()),
                        {"names": names, "rate_limited": RATE_LIMITED, "renewals": list(RENEWAL_METHODS)})
            return cur.fetchall()

    def daily(self, timezone: str, days: int = 7) -> list[DailyCalls]:
        """Calls per connection and day over the last `days` days (today included), days in `timezone`."""
        with self.conn.cursor(row_factory=class_row(DailyCalls)) as cur:
            cur.execute(sql.SQL(_DAILY_SQL).format(calls=self._calls()),
                        {"tz": timezone, "days": days, "rate_limited": RATE_LIMITED})
            return cur.fetchall()

    def by_method(self) -> list[MethodCalls]:
        with self.conn.cursor(row_factory=class_row(MethodCalls)) as cur:
            cur.execute(sql.SQL(_METHODS_SQL).format(calls=self._calls()), {"rate_limited": RATE_LIMITED})
            return cur.fetchall()


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
