"""The status page: per-table freshness coloured against the cadence, recent failures with their error,
and charts of rows per run and run duration (uPlot, vendored in static/). Server-rendered; the script
only draws the charts from the JSON embedded in the page."""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any

from bronzeline import __version__
from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.observe import api_calls, facts, model_page, slot_page
from bronzeline.observe.cadence import DEFAULT_ORIGIN
from bronzeline.observe.model_facts import models_view
from bronzeline.observe.slots import slots_json
from bronzeline.text import human_duration

PALETTE = ("#2563eb", "#059669", "#d97706", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#475569")
REFRESH_SECONDS = 60


def gather(ctx: Context, history: int) -> dict[str, Any]:
    session = ctx.control.session()
    return {"tables": facts.table_facts(ctx), "runs": facts.run_history(ctx, history),
            "failures": facts.recent_failures(ctx), "now": session.now, "user": session.user,
            "models": models_view(ctx), "slots": slots_json(ctx), "api": api_calls.api_json(ctx)}


def freshness(row: dict[str, Any]) -> tuple[str, str, float]:
    """(css class, label, fraction of the 2 × cadence limit) — the age that counts is the older of the
    last load and, for incremental tables, the watermark, as in `verify`."""
    age = row.get("seconds_since_load")
    if age is None:
        return "never", "never loaded", 0.0
    if row.get("mode") == "incremental" and row.get("lag_seconds") is not None:
        age = max(age, row["lag_seconds"])
    cadence = row.get("cadence_seconds")
    if not cadence:
        return "unknown", f"{human_duration(age)} ago", 0.0
    fraction = min(age / (2 * cadence), 1.0)
    if age <= cadence:
        return "fresh", "fresh", fraction
    if age <= 2 * cadence:
        return "due", "due", fraction
    return "stale", "stale", fraction


def _local(iso: str | None, config: Config) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(config.tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:,}"


def _table_rows(config: Config, tables: list[dict[str, Any]]) -> str:
    out = []
    for i, row in enumerate(tables):
        cls, label, fraction = freshness(row)
        age = row.get("seconds_since_load")
        limit = 2 * row["cadence_seconds"] if row.get("cadence_seconds") else None
        lag = human_duration(row["lag_seconds"]) if row.get("lag_seconds") is not None else "—"
        fails = row["failures_24h"]
        out.append(f"""
      <tr class="state-{cls}">
        <td><span class="dot" style="background:{PALETTE[i % len(PALETTE)]}"></span><b>{escape(row['table'])}</b>
            <span class="mode">{escape(row['mode'])}</span></td>
        <td><div class="fresh"><span class="pill {cls}">{escape(label)}</span>
            <span class="age">{'loaded ' + human_duration(age) + ' ago' if age is not None else ''}</span></div>
            <div class="bar" title="age against 2 × cadence ({human_duration(limit)})"><i class="{cls}"
                 style="width:{fraction * 100:.1f}%"></i></div></td>
        <td title="the source-clock bound of the last loaded window">{lag}<br><small>{escape(
            _local(row.get('watermark'), config))}</small></td>
        <td class="num">{_num(row.get('rows_loaded_last_run'))}<br><small>{_num(row.get('rows_skipped_last_run'))}
            skipped</small>{_invalid(row.get('rows_invalid_last_run'))}</td>
        <td class="num">{_num(row['runs']['loaded'])}</td>
        <td class="num{' warn' if row['pending_files'] or row.get('incomplete_files') else ''}">{row['pending_files']}{
            f"<br><small>{row['incomplete_files']} incomplete</small>" if row.get('incomplete_files') else ''}</td>
        <td class="num{' bad' if fails else ''}">{fails}</td>
        <td>every {human_duration(row.get('cadence_seconds'))}<br><small>{escape(
            _origin(row.get('cadence_from')))}</small></td>
      </tr>""")
    return "".join(out)


def _invalid(count: int | None) -> str:
    """API and push tables: records of the last run that could not be mapped (only when there were some)."""
    return f'<br><small class="bad">{count:,} invalid</small>' if count else ""


def _origin(origin: str | None) -> str:
    if not origin:
        return ""
    return "no cron: daily assumed" if origin == DEFAULT_ORIGIN else f"from {origin}"


def _failures(config: Config, failures: list[dict[str, Any]]) -> str:
    if not failures:
        return '<p class="ok-note">No failed runs in the last 7 days.</p>'
    items = []
    for f in failures:
        items.append(f"""
      <li><div class="fail-head"><b>{escape(f['table_name'])}</b> · run {f['run_id']} ·
          {escape(_local(f['run_started_at'], config))}</div>
          <pre>{escape(f['error_message'] or 'no message')}</pre></li>""")
    return f'<ul class="failures">{"".join(items)}</ul>'


def _chart_data(config: Config, data: dict[str, Any]) -> str:
    names = [t["table"] for t in data["tables"]]
    runs = [{"t": datetime.fromisoformat(r["run_finished_at"]).timestamp(), "table": r["table_name"],
             "rows": r["rows_loaded"], "extracted": r["rows_extracted"], "seconds": r["seconds"]}
            for r in data["runs"] if r["status"] == "loaded" and r["run_finished_at"]]
    payload = {"tz": config.timezone, "tables": names, "colors": [PALETTE[i % len(PALETTE)] for i in range(len(names))],
               "runs": runs, "refresh": REFRESH_SECONDS}
    return json.dumps(payload).replace("</", "<\\/")


def _summary(tables: list[dict[str, Any]], failures: int) -> tuple[str, str]:
    states = [freshness(t)[0] for t in tables]
    stale = states.count("stale") + states.count("never")
    if stale:
        return "bad", f"{stale} of {len(tables)} table(s) stale"
    if failures:
        return "warn", f"all {len(tables)} tables fresh · {failures} failed run(s) in 24 h"
    if "due" in states:
        return "warn", f"{states.count('due')} table(s) due for a run"
    return "good", f"all {len(tables)} tables fresh"


def render(config: Config, data: dict[str, Any]) -> str:
    tables = data["tables"]
    now = data["now"]
    level, summary = _summary(tables, sum(t["failures_24h"] for t in tables))
    models = data.get("models")
    trouble = model_page.summary(models) if models is not None else None
    if trouble:
        level, summary = "bad", f"{summary} · {trouble}"
    slots = data.get("slots") or []
    slot_trouble = slot_page.summary(slots)
    if slot_trouble:
        level = "bad" if "bad" in (level, slot_trouble[0]) else "warn"
        summary = f"{summary} · {slot_trouble[1]}"
    api_trouble = api_calls.summary(data.get("api"))
    if api_trouble:
        level = "warn" if level == "good" else level
        summary = f"{summary} · {api_trouble}"
    return PAGE.format(
        title=escape(f"bronzeline — {config.project}"), project=escape(config.project), level=level,
        summary=escape(summary), updated=escape(now.astimezone(config.tz).strftime("%Y-%m-%d %H:%M:%S %Z")),
        rows=_table_rows(config, tables), slots=slot_page.section(slots, config.tz),
        api=api_calls.section(data.get("api"), config.tz),
        models=model_page.section(config, models) if models is not None else "",
        failures=_failures(config, data["failures"]),
        data=_chart_data(config, data), user=escape(str(data["user"])), version=__version__,
        refresh=REFRESH_SECONDS, runs=sum(r["status"] == "loaded" for r in data["runs"]))


def render_down(config: Config, error: str) -> str:
    return DOWN.format(title=escape(f"bronzeline — {config.project}"), project=escape(config.project),
                       error=escape(error), refresh=REFRESH_SECONDS, version=__version__)


HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><meta http-equiv="refresh" content="{refresh}">
<link rel="stylesheet" href="/static/uPlot.min.css?v={version}">
<link rel="stylesheet" href="/static/page.css?v={version}"></head>"""

PAGE = HEAD + """
<body>
<header><h1><span class="brand">bronzeline</span> {project}</h1>
  <div class="summary {level}">{summary}</div><div class="updated">updated {updated}</div></header>
<main>
<section class="card"><h2>Tables</h2>
  <table class="tables"><thead><tr><th>table</th><th>freshness</th><th>watermark lag</th>
    <th class="num">rows last run</th><th class="num">loaded runs</th><th class="num">pending files</th>
    <th class="num">failed 24 h</th><th>cadence</th></tr></thead>
  <tbody>{rows}</tbody></table>
  <p class="legend"><span class="pill fresh">fresh</span> within the cadence · <span class="pill due">due</span>
    within 2 × cadence · <span class="pill stale">stale</span> older (verify fails)</p></section>
{slots}
{api}
{models}
<div class="charts">
  <section class="card"><h2>Rows loaded per run</h2><div id="chart-rows" class="chart"></div></section>
  <section class="card"><h2>Run duration (seconds)</h2><div id="chart-duration" class="chart"></div></section>
</div>
<section class="card"><h2>Recent failures</h2>{failures}</section>
</main>
<footer>bronzeline {version} · read-only as {user} · {runs} loaded runs charted ·
  <a href="/api/status">/api/status</a> · <a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></footer>
<script id="bl-data" type="application/json">{data}</script>
<script src="/static/uPlot.iife.min.js?v={version}"></script><script src="/static/page.js?v={version}"></script>
</body></html>
"""

DOWN = HEAD + """
<body><header><h1><span class="brand">bronzeline</span> {project}</h1>
  <div class="summary bad">warehouse unavailable</div></header>
<main><section class="card"><h2>The warehouse did not answer</h2><pre>{error}</pre>
  <p>This page retries every {refresh} seconds.</p></section></main></body></html>
"""
