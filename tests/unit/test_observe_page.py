"""The status page and /metrics from given facts: freshness colours, escaping, Prometheus text."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bronzeline.config.models import Config
from bronzeline.observe import metrics, page

CONFIG = Config.model_validate({
    "project": "fleet", "timezone": "Africa/Nairobi",
    "connections": {"source": {"dsn": "host=/tmp"}, "warehouse": {"dsn": "host=/tmp"}}, "blob": {"url": "file://./b"},
    "tables": [{"name": "ph", "from": "s.ph", "watermark": "t", "key": ["id"]}]})


def row(**over: Any) -> dict[str, Any]:
    base = {"table": "ph", "mode": "incremental", "last_loaded_at": "2026-01-01T10:00:00+00:00", "lag_seconds": 30.0,
            "watermark": "2026-01-01T09:59:30+00:00", "rows_loaded_last_run": 1200, "rows_skipped_last_run": 3,
            "pending_files": 0, "incomplete_files": 0, "failures_24h": 0, "last_status": "loaded", "last_error": None,
            "runs": {"extracting": 0, "uploaded": 0, "loaded": 4, "failed": 1}, "rows_inserted_total": 5000,
            "rows_skipped_total": 7, "seconds_since_load": 20.0, "last_run_seconds": 1.5, "cadence_seconds": 3600.0,
            "cadence_from": "schedule.cron"}
    return {**base, **over}


@pytest.mark.parametrize(("over", "state"), [
    ({}, "fresh"),
    ({"seconds_since_load": 5000.0}, "due"),
    ({"seconds_since_load": 8000.0}, "stale"),
    ({"lag_seconds": 9000.0}, "stale"),  # a watermark held back counts, as in verify
    ({"mode": "snapshot", "lag_seconds": 9000.0}, "fresh"),
    ({"seconds_since_load": None}, "never"),
])
def test_freshness_colours_against_the_cadence(over: dict[str, Any], state: str) -> None:
    assert page.freshness(row(**over))[0] == state


def test_page_escapes_names_and_errors_and_embeds_chart_data() -> None:
    evil = "<script>alert(1)</script>"
    data = {"tables": [row(failures_24h=1)], "now": datetime(2026, 1, 1, 10, 0, 20, tzinfo=UTC), "user": "dwh_ro",
            "failures": [{"run_id": 9, "table_name": "ph", "run_started_at": "2026-01-01T09:00:00+00:00",
                          "error_message": evil}],
            "runs": [{"run_id": 1, "table_name": "ph", "status": "loaded",
                      "run_finished_at": "2026-01-01T09:00:00+00:00", "rows_loaded": 10, "rows_extracted": 10,
                      "seconds": 0.5}]}
    html = page.render(CONFIG, data)
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "2026-01-01 13:00:20 EAT" in html  # times in the config's time zone
    assert "1 failed run(s) in 24 h" in html and 'class="pill fresh"' in html
    assert "incomplete" not in html.split("<tbody>")[1].split("</tbody>")[0]
    assert "2 incomplete" in page.render(CONFIG, {**data, "tables": [row(incomplete_files=2)]})
    embedded = re.search(r'<script id="bl-data" type="application/json">(.*?)</script>', html, re.S)
    assert embedded is not None
    payload = json.loads(embedded.group(1))
    assert payload["tz"] == "Africa/Nairobi" and payload["tables"] == ["ph"]
    assert payload["runs"] == [{"t": 1767258000.0, "table": "ph", "rows": 10, "extracted": 10, "seconds": 0.5}]


def test_metrics_text_parses_and_says_down() -> None:
    text = metrics.render("fleet", lambda: [row(incomplete_files=2)]).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("bronzeline_up", ())] == 1
    assert samples[("bronzeline_rows_inserted_total", (("table", "ph"),))] == 5000
    assert samples[("bronzeline_runs", (("status", "failed"), ("table", "ph")))] == 1
    assert samples[("bronzeline_freshness_limit_seconds", (("table", "ph"),))] == 7200
    assert samples[("bronzeline_incomplete_files", (("table", "ph"),))] == 2

    def down() -> list[dict[str, Any]]:
        raise OSError("no warehouse")

    text = metrics.render("fleet", down).decode()
    names = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert names["bronzeline_up"] == 0 and "bronzeline_rows_inserted_total" not in names
