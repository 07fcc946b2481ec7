"""The API call log as `status`, `status --json`, the status page and /metrics show it: per connection its
calls, failures, rate limiting, token renewals, rows and durations over 24 hours, and calls per day over 7."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from html import escape
from typing import Any

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.warehouse.api_read import ApiCallReader, ConnectionCalls, DailyCalls, MethodCalls

API_CONNECTION_TYPES = ("tracksolid",)  # connections whose calls are logged (pushes make no calls)


@dataclass(frozen=True)
class ApiView:
    connections: list[ConnectionCalls] = field(default_factory=list)
    daily: list[DailyCalls] = field(default_factory=list)
    methods: list[MethodCalls] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        """Whether there is anything to show: API connections configured, or calls logged."""
        return bool(self.connections or self.daily)

    def as_json(self) -> dict[str, Any]:
        """The `status --json` / /api/status shape: ISO times with their offset, numbers as numbers."""
        return {"connections": [c.as_json() for c in self.connections], "daily": [d.as_json() for d in self.daily]}


def api_connections(config: Config) -> list[str]:
    return [name for name, conn in config.connections.items() if getattr(conn, "type", None) in API_CONNECTION_TYPES]


def api_view(ctx: Context, *, methods: bool = False) -> ApiView:
    ctx.require_migrated()
    reader = ApiCallReader(ctx.warehouse, ctx.config.warehouse.control_schema)
    return ApiView(reader.connections(api_connections(ctx.config)), reader.daily(ctx.config.timezone),
                   reader.by_method() if methods else [])


def api_json(ctx: Context) -> dict[str, Any]:
    return api_view(ctx).as_json()


def metrics_view(ctx: Context) -> ApiView:
    return api_view(ctx, methods=True)


# -- the status page's card

def _local(value: str | None, tz: tzinfo) -> str:
    if not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def section(api: dict[str, Any] | None, tz: tzinfo) -> str:
    """The "API calls" card from the `api` JSON shape; empty without API connections or calls."""
    if not api or not (api["connections"] or api["daily"]):
        return ""
    rows = []
    for c in api["connections"]:
        failed = c["failures_24h"]
        error = f"<br><small>{escape(c['last_error'])}</small>" if c["last_error"] else ""
        rows.append(f"""
      <tr class="state-{'due' if failed else 'fresh'}">
        <td><b>{escape(c['connection'])}</b></td>
        <td class="num">{c['calls_24h']:,}</td>
        <td class="num{' bad' if failed else ''}">{failed:,}{error}</td>
        <td class="num{' warn' if c['rate_limited_24h'] else ''}">{c['rate_limited_24h']:,}</td>
        <td class="num">{c['renewals_24h']:,}</td>
        <td class="num">{c['rows_24h']:,}</td>
        <td class="num">{_ms(c['avg_ms'])}<br><small>p95 {_ms(c['p95_ms'])}</small></td>
        <td>{escape(_local(c['last_call_at'], tz))}</td>
      </tr>""")
    days = []
    for d in api["daily"]:
        days.append(f"""
      <tr><td>{escape(d['day'])}</td><td>{escape(d['connection'])}</td><td class="num">{d['calls']:,}</td>
        <td class="num{' bad' if d['failures'] else ''}">{d['failures']:,}</td>
        <td class="num">{d['rate_limited']:,}</td><td class="num">{d['rows']:,}</td>
        <td class="num">{_ms(d['avg_ms'])}</td></tr>""")
    per_day = f"""
  <h3>Calls per day (7 days)</h3>
  <table class="tables"><thead><tr><th>day</th><th>connection</th><th class="num">calls</th>
    <th class="num">failed</th><th class="num">rate limited</th><th class="num">rows</th>
    <th class="num">avg</th></tr></thead>
  <tbody>{''.join(days)}</tbody></table>""" if days else ""
    return f"""<section class="card api"><h2>API calls</h2>
  <table class="tables"><thead><tr><th>connection</th><th class="num">calls 24 h</th><th class="num">failed</th>
    <th class="num">rate limited</th><th class="num">token renewals</th><th class="num">rows</th>
    <th class="num">duration</th><th>last call</th></tr></thead>
  <tbody>{''.join(rows)}</tbody></table>{per_day}
  <p class="legend">Every call to the platform is logged in the control schema's <code>api_calls</code>; failed:
    a code other than 0 or no answer, rate limited: code 1006.</p></section>"""


def summary(api: dict[str, Any] | None) -> str | None:
    """What the page's header adds when calls failed in the last 24 hours."""
    if not api:
        return None
    failed = sum(c["failures_24h"] for c in api["connections"])
    return f"{failed} failed API call(s) in 24 h" if failed else None
