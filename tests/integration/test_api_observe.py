"""The API call log and invalid records as status, status --json, the status page, /metrics and runs show them.
The calls are written straight into `dwh_control.api_calls` (that table is the contract between the client that
logs and the readers), over a migrated warehouse with one loaded run."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bronzeline.observe.server import create_app
from tests.cli import invoke
from tests.integration.pipeline import Pipeline
from tests.integration.test_serve import get, running

TZ = "Africa/Nairobi"
CONFIG = f"""\
project: fleet
timezone: {TZ}
connections:
  source: {{dsn: "${{SOURCE_DSN}}"}}
  warehouse: {{dsn: "${{WAREHOUSE_DSN}}"}}
  jimi:
    type: tracksolid
    url: http://127.0.0.1:9/route/rest
    app_key: k
    app_secret: "${{JIMI_APP_SECRET}}"
    user_id: acme
    password_md5: "${{JIMI_PASSWORD_MD5}}"
  idle_jimi:
    type: tracksolid
    app_key: k2
    app_secret: "${{JIMI_APP_SECRET}}"
    user_id: other
    password_md5: "${{JIMI_PASSWORD_MD5}}"
blob:
  url: file://./blob
tables:
  - name: pings
    from: tracksolid.pings
    mode: incremental
    watermark: recorded_at
    key: [id]
"""

# (hours ago, connection, method, code, message, duration ms, rows)
CALLS: list[tuple[float, str, str, int | None, str | None, float, int]] = [
    (1.0, "jimi", "jimi.oauth.token.get", 0, "success", 120.0, 0),
    (0.9, "jimi", "jimi.device.track.list", 0, "success", 300.0, 1500),
    (0.8, "jimi", "jimi.device.track.list", 1006, "Illegal access, too frequently request!", 40.0, 0),
    (0.7, "jimi", "jimi.device.track.list", 0, "success", 500.0, 700),
    (0.6, "jimi", "jimi.user.device.location.list", None, "timed out after 30s", 30000.0, 0),
    (0.5, "jimi", "jimi.oauth.token.refresh", 0, "success", 80.0, 0),
    (0.4, "jimi", "jimi.device.alarm.list", 1004, "Illegal access, token exception!", 60.0, 0),
    (0.3, "jimi", "jimi.device.alarm.list", 0, "success", 90.0, 12),
    (30.0, "jimi", "jimi.device.track.list", 1001, "Parameter error", 50.0, 0),  # older than 24 h
    (50.0, "jimi", "jimi.device.track.list", 0, "success", 250.0, 900),
    (75.0, "gone", "jimi.device.track.list", 0, "success", 100.0, 5),  # a connection no longer configured
    (40.0, "idle_jimi", "jimi.user.device.list", 0, "success", 100.0, 3),  # configured, no call in 24 h
    (24 * 9, "jimi", "jimi.device.track.list", 0, "success", 100.0, 5),  # older than the 7 days shown
]


@pytest.fixture
def logged(pipeline: Pipeline) -> tuple[Pipeline, datetime]:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.pings (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.pings (id) SELECT g FROM generate_series(1, 5) g")
    pipeline.config_path.write_text(CONFIG)
    pipeline.env.update({"JIMI_APP_SECRET": "s3cr3t-app", "JIMI_PASSWORD_MD5": "0" * 32})
    time.sleep(0.15)
    for command in ("migrate", "run"):
        result = cli(pipeline, command)
        assert result.returncode == 0, result.stderr
    with pipeline.wh() as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        for hours, connection, method, code, message, ms, rows in CALLS:
            conn.execute(
                "INSERT INTO dwh_control.api_calls (called_at, connection, method, target, imeis, code, message, "
                "http_status, duration_ms, rows, table_name, run_id, retry) "
                "VALUES (%s, %s, %s, 'acme', 1, %s, %s, 200, %s, %s, 'api_track', NULL, 0)",
                (now - timedelta(hours=hours), connection, method, code, message, ms, rows))
    return pipeline, now


def cli(pipeline: Pipeline, *args: str) -> Any:
    return invoke(pipeline.tmp, "-c", str(pipeline.config_path), *args, env=pipeline.environ())


def recent() -> list[tuple[float, str, str, int | None, str | None, float, int]]:
    return [c for c in CALLS if c[1] == "jimi" and c[0] < 24]


def test_status_json_shows_the_call_log_per_connection_and_day(logged: tuple[Pipeline, datetime]) -> None:
    pipeline, now = logged
    status = json.loads(cli(pipeline, "status", "--json").stdout)
    connections = {c["connection"]: c for c in status["api"]["connections"]}
    assert list(connections) == ["idle_jimi", "jimi"]  # configured ones (even without calls) and any with calls
    jimi = connections["jimi"]
    durations = [c[5] for c in recent()]
    expected_p95 = statistics.quantiles(durations, n=20, method="inclusive")[-1]
    assert {k: v for k, v in jimi.items() if k not in ("avg_ms", "p95_ms", "last_call_at")} == {
        "connection": "jimi", "calls_24h": 8, "failures_24h": 3, "rate_limited_24h": 1, "renewals_24h": 2,
        "rows_24h": 2212, "last_error": "1004 Illegal access, token exception!"}
    assert jimi["avg_ms"] == round(sum(durations) / len(durations), 1)
    assert jimi["p95_ms"] == pytest.approx(expected_p95, abs=0.1)
    assert datetime.fromisoformat(jimi["last_call_at"]) == now - timedelta(hours=0.3)
    assert jimi["last_call_at"].endswith("+00:00")
    idle = connections["idle_jimi"]
    assert datetime.fromisoformat(idle.pop("last_call_at")) == now - timedelta(hours=40)  # older than 24 h
    assert idle == {"connection": "idle_jimi", "calls_24h": 0, "failures_24h": 0, "rate_limited_24h": 0,
                    "renewals_24h": 0, "rows_24h": 0, "avg_ms": None, "p95_ms": None, "last_error": None}

    tz = ZoneInfo(TZ)
    today = now.astimezone(tz).date()
    expected: dict[tuple[str, str], list[int]] = {}
    for hours, connection, _, code, _, _, rows in CALLS:
        day = (now - timedelta(hours=hours)).astimezone(tz).date()
        if (today - day).days < 7:
            counts = expected.setdefault((day.isoformat(), connection), [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += code != 0
            counts[2] += code == 1006
            counts[3] += rows
    got = {(d["day"], d["connection"]): [d["calls"], d["failures"], d["rate_limited"], d["rows"]]
           for d in status["api"]["daily"]}
    assert got == expected
    assert [d["day"] for d in status["api"]["daily"]] == sorted(d["day"] for d in status["api"]["daily"])
    assert all(isinstance(d["avg_ms"], float) for d in status["api"]["daily"])


def test_invalid_records_show_in_status_and_runs(logged: tuple[Pipeline, datetime]) -> None:
    pipeline, _ = logged
    status = json.loads(cli(pipeline, "status", "--json").stdout)
    assert status["tables"][0]["rows_invalid_last_run"] == 0
    plain = cli(pipeline, "runs").stdout
    assert "invalid" not in plain  # only API and push runs with invalid records add the column
    runs = json.loads(cli(pipeline, "runs", "--json").stdout)["runs"]
    assert runs[0]["rows_invalid"] == 0

    with pipeline.wh() as conn:
        conn.execute("UPDATE dwh_control.extract_runs SET rows_invalid = 3")
    status = json.loads(cli(pipeline, "status", "--json").stdout)
    assert status["tables"][0]["rows_invalid_last_run"] == 3
    text = cli(pipeline, "status").stdout
    assert "+3 invalid" in text
    assert "API calls (24 h)" in text and "jimi" in text and "API calls per day" in text
    runs = json.loads(cli(pipeline, "runs", "--json").stdout)["runs"]
    assert runs[0]["rows_invalid"] == 3
    plain = cli(pipeline, "runs").stdout
    header = next(line for line in plain.splitlines() if "extracted" in line)
    assert "invalid" in header


def test_page_and_metrics_show_the_call_log(logged: tuple[Pipeline, datetime]) -> None:
    pipeline, _ = logged
    app = create_app(pipeline.config())
    with running(app) as url:
        html = get(f"{url}/").text
        metrics = get(f"{url}/metrics").text
        api = get(f"{url}/api/status").json()["api"]
    card = html.split("<h2>API calls</h2>")[1].split("</section>")[0]
    assert "<b>jimi</b>" in card and "<b>idle_jimi</b>" in card
    assert "Calls per day (7 days)" in card and ">gone<" in card
    assert "1004 Illegal access, token exception!" in card
    assert "3 failed API call(s) in 24 h" in html
    assert [c["connection"] for c in api["connections"]] == ["idle_jimi", "jimi"]

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    calls = {(s.labels["connection"], s.labels["method"], s.labels["outcome"]): s.value
             for s in families["bronzeline_api_calls_24h"].samples}
    assert calls[("jimi", "jimi.device.track.list", "ok")] == 2
    assert calls[("jimi", "jimi.device.track.list", "rate_limited")] == 1
    assert calls[("jimi", "jimi.device.track.list", "error")] == 0
    assert calls[("jimi", "jimi.user.device.location.list", "error")] == 1  # no answer counts as an error
    assert calls[("jimi", "jimi.device.alarm.list", "error")] == 1
    assert sum(calls.values()) == 8  # only the last 24 hours
    durations = [c[5] for c in recent()]
    avg = {s.labels["connection"]: s.value for s in families["bronzeline_api_call_seconds_avg"].samples}
    assert avg["jimi"] == pytest.approx(sum(durations) / len(durations) / 1000, abs=1e-4)
    assert "idle_jimi" not in avg
    renewals = {s.labels["connection"]: s.value for s in families["bronzeline_api_token_renewals_24h"].samples}
    assert renewals == {"idle_jimi": 0, "jimi": 2}
    assert "s3cr3t-app" not in html + metrics
