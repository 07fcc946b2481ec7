"""The status page's card for change data capture: per slot its state at the source, the WAL it holds
back against `cdc.max_retained_wal`, the lag and the last heartbeat. Shown only with cdc tables."""

from __future__ import annotations

from datetime import datetime, tzinfo
from html import escape
from typing import Any

from bronzeline.observe.slots import human_bytes
from bronzeline.text import human_duration


def state(row: dict[str, Any]) -> tuple[str, str]:
    """(css class, label): stale for a slot that is gone, lost or over the limit; due when its source
    does not answer or it is unreserving; fresh otherwise (idle between runs is normal)."""
    if row["error"]:
        return "due", "source unreachable"
    if not row["exists"]:
        return "stale", "missing"
    if row["wal_status"] == "lost":
        return "stale", "lost"
    retained = row["retained_wal_bytes"]
    if retained is not None and retained > row["max_retained_wal_bytes"]:
        return "stale", "over the limit"
    if row["wal_status"] == "unreserving":
        return "due", "unreserving"
    return "fresh", "active" if row["active"] else "idle"


def _local(value: str | None, tz: tzinfo) -> str:
    if not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def section(slots: list[dict[str, Any]], tz: tzinfo) -> str:
    if not slots:
        return ""
    rows = []
    for row in slots:
        cls, label = state(row)
        retained, limit = row["retained_wal_bytes"], row["max_retained_wal_bytes"]
        fraction = min((retained or 0) / limit, 1.0) if limit else 0.0
        resync = f"bronzeline resync {' '.join(row['tables'])}"
        note = escape(row["error"]) if row["error"] else (
            f"run <code>{escape(resync)}</code>" if cls == "stale" and label != "over the limit" else "")
        rows.append(f"""
      <tr class="state-{cls}">
        <td><b>{escape(row['slot'])}</b><br><small>source {escape(row['source'])} ·
            {escape(', '.join(row['tables']))}</small></td>
        <td><span class="pill {cls}">{escape(label)}</span><br><small>{escape(row['wal_status'] or '—')}</small>
            {f'<br><small>{note}</small>' if note else ''}</td>
        <td><div>{human_bytes(retained)} <small>of {human_bytes(limit)}</small></div>
            <div class="bar" title="retained WAL against cdc.max_retained_wal"><i class="{cls}"
                 style="width:{fraction * 100:.1f}%"></i></div></td>
        <td class="num">{human_bytes(row['confirmed_lag_bytes'])}</td>
        <td>{human_duration(row['lag_seconds'])}<br><small>{escape(row['applied_lsn'] or '')}</small></td>
        <td>{escape(_local(row['last_heartbeat_at'], tz))}</td>
      </tr>""")
    return f"""<section class="card slots"><h2>Change data capture</h2>
  <table class="tables"><thead><tr><th>slot</th><th>state</th><th>retained WAL</th>
    <th class="num">unconfirmed WAL</th><th>lag</th><th>last heartbeat</th></tr></thead>
  <tbody>{''.join(rows)}</tbody></table>
  <p class="legend">A slot keeps the source's WAL until bronzeline has applied it; a lost slot means a
    <code>bronzeline resync</code>.</p></section>"""


def summary(slots: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(level, text) the page's header adds when a slot needs attention."""
    states = [state(row)[0] for row in slots]
    if "stale" in states:
        return "bad", f"{states.count('stale')} cdc slot(s) missing, lost or over the WAL limit"
    if "due" in states:
        return "warn", f"{states.count('due')} cdc slot(s) unreachable or unreserving"
    return None
