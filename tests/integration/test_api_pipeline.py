"""API tables end to end against the package's fake platform over HTTP: every record of the loaded windows
in bronze exactly once (rate limiting and token expiry on), the vendor's quirks fixed, the ledger and the call
log complete, malformed records kept in raw, late fixes picked up by lookback, kill -9 at every step."""

from __future__ import annotations

import gzip
import json
import signal
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from bronzeline.faults import POINTS
from tests.integration.api_project import KEYS, ApiProject, api_project, metres_to_km, utc
from tests.integration.pipeline import Pipeline

FLEET = {"devices_per_account": 6, "reporting_share": 0.5, "targets": ("fireside", "Fireside@HQ")}


@pytest.fixture
def api(pipeline: Pipeline) -> Any:
    with api_project(pipeline, late_share=0.0, rate_limit_every=4, token_ttl_seconds=1.5, **FLEET) as project:
        pipeline.cli("migrate", check=True)
        yield project


def assert_ledger(project: ApiProject) -> None:
    with project.pipeline.wh() as conn:
        runs = conn.execute("SELECT table_name, status, rows_extracted, rows_loaded, rows_skipped, rows_invalid "
                            "FROM dwh_control.extract_runs").fetchall()
        calls = conn.execute("SELECT method, code, retry FROM dwh_control.api_calls ORDER BY call_id").fetchall()
    assert runs and all(r[1] == "loaded" for r in runs), runs
    assert all(r[2] == r[3] + r[4] for r in runs)
    # Every call the platform answered is in the call log, refusals included.
    assert len(calls) == len(project.fake.calls)
    assert sorted((c.method, c.code) for c in project.fake.calls) == sorted((c[0], c[1]) for c in calls)


def test_every_record_of_the_windows_once_with_rate_limits_and_token_expiry(api: ApiProject) -> None:
    first = api.pipeline.run()
    assert all(o.status == "loaded" for o in first), [o.message for o in first]
    api.fake.advance(900)  # a quarter of an hour later on the platform's clock: new fixes, trips, alarms
    time.sleep(1.6)  # the token has expired meanwhile: the next run refreshes it
    second = api.pipeline.run()
    assert all(o.status == "loaded" for o in second), [o.message for o in second]

    for table in KEYS:
        api.assert_exactly_once(table)
    codes = [c.code for c in api.fake.calls]
    assert 1006 in codes  # the rate limit was hit, and nothing was lost to it
    assert any(c.method == "jimi.oauth.token.refresh" for c in api.fake.calls)
    assert_ledger(api)
    with api.pipeline.wh() as conn:
        assert conn.execute("SELECT count(*) FROM dwh_control.api_calls WHERE code = 1006 AND retry >= 0"
                            ).fetchone()[0] == codes.count(1006)
        devices = conn.execute("SELECT count(*) FROM bronze.api_devices").fetchone()[0]
        live = conn.execute("SELECT count(*) FROM bronze.api_live").fetchone()[0]
    assert devices == live == len(api.fake.imeis_of())


def test_vendor_quirks_are_fixed(api: ApiProject) -> None:
    assert all(o.status == "loaded" for o in api.pipeline.run())
    spans = {t: api.windows(t) for t in ("api_trips", "api_alarms", "api_parking")}
    trips = api.fake.truth("trips", start=spans["api_trips"][0][0], end=spans["api_trips"][-1][1])
    alarms = api.fake.truth("alarms", start=spans["api_alarms"][0][0], end=spans["api_alarms"][-1][1])
    parking = api.fake.truth("parking", start=spans["api_parking"][0][0], end=spans["api_parking"][-1][1])
    assert trips and alarms and parking
    with api.pipeline.wh() as conn:
        km = {(r[0], r[1]): r[2] for r in conn.execute("SELECT imei, start_time, distance_km FROM bronze.api_trips")}
        named = {(r[0], r[1], r[2]): r[3] for r in conn.execute(
            "SELECT imei, alarm_type, alarm_time, alarm_name FROM bronze.api_alarms")}
        stops = {(r[0], r[1]): r[2]
                 for r in conn.execute("SELECT imei, start_time, duration_s FROM bronze.api_parking")}
        geom = conn.execute("SELECT count(*) FILTER (WHERE geom IS NOT NULL), count(*) FROM bronze.api_track"
                            ).fetchone()
    for trip in trips:  # the platform sends metres
        assert km[(trip["imei"], utc(trip["startTime"]))] == metres_to_km(trip["distance"])
    for alarm in alarms:
        assert named[(alarm["imei"], str(alarm["alertTypeId"]), utc(alarm["alertTime"]))] == alarm["alarmTypeName"]
    for stop in parking:
        assert stops[(stop["imei"], utc(stop["startTime"]))] == int(Decimal(str(stop["durSecond"])))
    assert geom[0] == geom[1] > 0  # PostGIS points from the coordinates


def test_malformed_records_land_in_raw_counted_and_the_rest_loads(pipeline: Pipeline) -> None:
    with api_project(pipeline, late_share=0.0, malformed_share=0.1, **FLEET) as api:
        api.write("  - {name: api_track, source: jimi, endpoint: track, since: 3 hours}\n")
        pipeline.cli("migrate", check=True)
        [outcome] = pipeline.run()
        assert outcome.status == "loaded", outcome.message
        with pipeline.wh() as conn:
            invalid = conn.execute("SELECT rows_invalid, rows_extracted FROM dwh_control.extract_runs").fetchone()
            raw = conn.execute("SELECT count(*), count(error) FROM bronze.api_track_raw").fetchone()
            typed = conn.execute("SELECT count(*) FROM bronze.api_track").fetchone()[0]
            sample = conn.execute("SELECT error FROM bronze.api_track_raw WHERE error IS NOT NULL LIMIT 1").fetchone()
        assert invalid[0] > 0 and invalid[0] == raw[1]
        assert raw[0] == invalid[0] + invalid[1] and typed == invalid[1]
        assert "gpsTime" in sample[0] or "lat" in sample[0]


def test_late_fixes_are_read_again_by_lookback_without_duplicates(pipeline: Pipeline) -> None:
    with api_project(pipeline, late_share=0.5, late_delay_s=(3000, 4000), **FLEET) as api:
        now = api.fake.now()
        api.fake.advance(((9 - now.hour) % 24) * 3600)  # the platform's late morning in Nairobi: vehicles drive
        api.write("  - {name: api_track, source: jimi, endpoint: track, lookback: 2 hours, since: 2 hours}\n")
        pipeline.cli("migrate", check=True)
        pipeline.run()
        start, first_end = api.windows("api_track")[0]
        seen_then = api.fake.truth("track", start=start, end=first_end, as_of=first_end + timedelta(minutes=2))
        api.fake.advance(5400)  # every fix of the first window re-uploaded by now (the delays are 50-67 minutes)
        second = pipeline.run()
        assert all(o.status == "loaded" for o in second), [o.message for o in second]
        # Every point of the first window visible now (late ones included) is in bronze, once.
        now_visible = api.fake.truth("track", start=start, end=first_end)
        assert len(now_visible) > len(seen_then)  # late fixes arrived for the first window after it was read
        got = set(api.keys("api_track", ("imei", "gps_time")))
        missing = [r for r in now_visible if (r["imei"], utc(r["gpsTime"])) not in got]
        assert not missing
        with pipeline.wh() as conn:
            skipped = conn.execute("SELECT sum(rows_skipped) FROM dwh_control.extract_runs").fetchone()[0]
        assert skipped > 0  # the lookback re-read what was already there, and skipped it


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_each_step_then_exact_parity(api: ApiProject, point: str) -> None:
    api.write("  - {name: api_track, source: jimi, endpoint: track, lookback: 1 hour, since: 3 hours}\n")
    killed = api.pipeline.cli("run", env={"BRONZELINE_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    api.fake.advance(300)
    api.pipeline.cli("run", check=True)
    assert api.pipeline.files("exports", "api_track") == []
    api.assert_exactly_once("api_track")
    with api.pipeline.wh() as conn:
        runs = conn.execute("SELECT status, rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs"
                            ).fetchall()
        raw_dupes = conn.execute("SELECT count(*) - count(DISTINCT record_id) FROM bronze.api_track_raw").fetchone()
    assert {r[0] for r in runs} <= {"loaded", "failed"}
    assert all(r[1] == r[2] + r[3] for r in runs if r[0] == "loaded")
    assert raw_dupes == (0,)


def test_a_truncated_batch_is_refused_and_its_window_read_again(api: ApiProject) -> None:
    api.write("  - {name: api_track, source: jimi, endpoint: track, since: 3 hours}\n")
    killed = api.pipeline.cli("run", env={"BRONZELINE_CRASH_AT": "uploaded"})
    assert killed.returncode == -signal.SIGKILL
    [data] = [n for n in api.pipeline.files("exports", "api_track") if n.endswith(".jsonl.gz")]
    path = api.pipeline.blob / "exports" / "api_track" / data
    path.write_bytes(path.read_bytes()[:-40])
    failed = api.pipeline.cli("run")
    assert failed.returncode == 1 and "failed/" in failed.stderr and "Traceback" not in failed.stderr
    api.pipeline.cli("run", check=True)
    api.assert_exactly_once("api_track")
    assert any(n.endswith(".jsonl.gz") for n in api.pipeline.files("failed", "api_track"))


def test_no_secret_in_calls_raw_rows_batches_or_output(api: ApiProject) -> None:
    api.write("  - {name: api_track, source: jimi, endpoint: track, since: 3 hours}\n")
    shown = api.pipeline.cli("--debug", "run", check=True)
    secret = api.fake.settings.app_secret
    password = api.fake.settings.accounts[api.fake.settings.login]
    with api.pipeline.wh() as conn:
        token = conn.execute("SELECT access_token FROM dwh_control.api_tokens").fetchone()[0]
        texts = [str(r) for r in conn.execute("SELECT * FROM dwh_control.api_calls").fetchall()]
        texts += [str(r) for r in conn.execute("SELECT call FROM bronze.api_track_raw").fetchall()]
    texts += [gzip.decompress(p.read_bytes()).decode() for p in (api.pipeline.blob / "processed").rglob("*.gz")]
    texts += [shown.stdout, shown.stderr]
    for text in texts:
        assert secret not in text and password not in text and token not in text


def test_verify_status_and_runs_know_api_tables(api: ApiProject) -> None:
    api.write("  - {name: api_track, source: jimi, endpoint: track, since: 3 hours}\n"
              "  - {name: api_live, source: jimi, endpoint: live_positions}\n")
    api.pipeline.cli("run", check=True)
    verified = api.pipeline.cli("verify", "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0, [g for g in report["gates"] if g["status"] == "fail"]
    [gate] = [g for g in report["gates"] if g["gate"] == "connection" and g["subject"] == "jimi"]
    assert gate["status"] == "pass" and api.fake.settings.login in gate["detail"]
    status = json.loads(api.pipeline.cli("status", "--json", check=True).stdout)
    [jimi] = status["api"]["connections"]
    assert jimi["connection"] == "jimi" and jimi["calls_24h"] == len(api.fake.calls)
    wrong = api.pipeline.cli("run", env={"JIMI_APP_SECRET": "not-the-secret", "JIMI_PASSWORD_MD5": "0" * 32})
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "app_secret" in wrong.stderr and "not-the-secret" not in wrong.stderr
