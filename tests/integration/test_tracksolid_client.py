"""The Tracksolid client and fetchers against the fake platform over real HTTP on loopback, with the
call log and token cache in a real control schema."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from bronzeline.config.models import TableConfig, TracksolidConfig
from bronzeline.errors import SourceRefused, SourceUnreachable, Transient
from bronzeline.fleet.jimi_fake import FakePlatform
from bronzeline.sources import SourceEnv, open_source
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.base import Window
from bronzeline.sources.tracksolid.client import ApiBusy, CallBudgetExceeded, TracksolidClient
from bronzeline.sources.tracksolid.fetch import Fetcher
from bronzeline.warehouse import migrations
from bronzeline.warehouse.api_ledger import WarehouseApiLedger

CONTROL = "dwh_control"
Conn = psycopg.Connection[Any]


@pytest.fixture
def control(new_database: Any) -> Iterator[Conn]:
    with psycopg.connect(new_database(postgis=False), autocommit=True) as conn:
        migrations.apply(conn, CONTROL)
        yield conn


def ledger(conn: Conn) -> WarehouseApiLedger:
    return WarehouseApiLedger(lambda: conn, CONTROL)


def config(fake: FakePlatform, **extra: Any) -> TracksolidConfig:
    s = fake.settings
    fields: dict[str, Any] = {"type": "tracksolid", "url": fake.url, "app_key": s.app_key, "app_secret": s.app_secret,
                              "user_id": s.login, "password_md5": s.accounts[s.login], "rate_limit_backoff": "0.01s",
                              "rate_limit_max_backoff": "0.05s", **extra}
    return TracksolidConfig(**fields)


def methods(fake: FakePlatform) -> Counter[tuple[str, int]]:
    return Counter((c.method, c.code) for c in fake.calls)


def calls(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT method, code, retry, imeis, target, message FROM {CONTROL}.api_calls "
                        "ORDER BY call_id").fetchall()


def canon(rows: list[Any]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def records(client: TracksolidClient, cfg: TracksolidConfig, endpoint: str, start: datetime | None = None,
            end: datetime | None = None) -> list[ApiRecord]:
    return list(Fetcher(client, cfg, "api_test", 7, {}).records(endpoint, start, end))


def test_token_is_cached_in_the_ledger_and_reused_across_clients(control: Conn) -> None:
    with FakePlatform(devices_per_account=3) as fake:
        cfg = config(fake)
        TracksolidClient("jimi", cfg, ledger(control)).call("jimi.user.device.list", {"target": "fireside"})
        TracksolidClient("jimi", cfg, ledger(control)).call("jimi.user.device.list", {"target": "fireside"})
        assert methods(fake)[("jimi.oauth.token.get", 0)] == 1
        assert methods(fake)[("jimi.user.device.list", 0)] == 2
        row = control.execute(f"SELECT account, expires_at > now() FROM {CONTROL}.api_tokens "
                              "WHERE connection = 'jimi'").fetchone()
        assert row == ("fireside", True)
        assert [c[:3] for c in calls(control)] == [("jimi.oauth.token.get", 0, 0), ("jimi.user.device.list", 0, 0),
                                                  ("jimi.user.device.list", 0, 0)]


def test_a_token_expiring_mid_run_is_refreshed_and_a_refused_refresh_logs_in_again(control: Conn) -> None:
    with FakePlatform(devices_per_account=3, token_ttl_seconds=2) as fake:
        client = TracksolidClient("jimi", config(fake), ledger(control))
        client.call("jimi.user.device.list", {"target": "fireside"})
        time.sleep(1.1)  # within half the token's life of its end: refreshed before the call
        client.call("jimi.user.device.list", {"target": "fireside"})
        assert methods(fake)[("jimi.oauth.token.refresh", 0)] == 1
        fake.settings.fail_refresh = True
        time.sleep(1.1)
        client.call("jimi.user.device.list", {"target": "fireside"})
        got = methods(fake)
        assert got[("jimi.oauth.token.refresh", 1004)] == 1 and got[("jimi.oauth.token.get", 0)] == 2
        assert got[("jimi.user.device.list", 0)] == 3 and not got[("jimi.user.device.list", 1004)]


def test_code_1004_gets_a_new_token_and_one_retry(control: Conn) -> None:
    with FakePlatform(devices_per_account=3) as fake:
        client = TracksolidClient("jimi", config(fake), ledger(control))
        client.call("jimi.user.device.list", {"target": "fireside"})
        fake.revoke_all_tokens()
        reply = client.call("jimi.user.device.list", {"target": "fireside"}, target="fireside")
        assert reply.code == 0 and len(reply.result) == 3
        assert [c[:3] for c in calls(control)][2:] == [
            ("jimi.user.device.list", 1004, 0), ("jimi.oauth.token.get", 0, 1), ("jimi.user.device.list", 0, 1)]
        # a token the platform refuses even fresh is not retried for ever
        fake.settings.token_ttl_seconds = 0.001
        fake.revoke_all_tokens()
        with pytest.raises(SourceRefused, match="1004"):
            client.call("jimi.user.device.list", {"target": "fireside"})


def test_rate_limit_bursts_lose_nothing_and_the_back_off_is_logged(control: Conn) -> None:
    # every second call refused, token calls included
    with FakePlatform(devices_per_account=12, rate_limit_every=2) as fake:
        cfg = config(fake)
        client = TracksolidClient("jimi", cfg, ledger(control))
        client.call("jimi.user.device.list", {"target": "fireside"})
        fake.revoke_all_tokens()  # the next login meets 1006 too
        end = fake.now() - timedelta(minutes=5)
        got = records(client, cfg, "alarms", end - timedelta(hours=12), end)
        assert canon([r.record for r in got]) == canon(fake.truth("alarms", start=end - timedelta(hours=12), end=end))
        assert methods(fake)[("jimi.oauth.token.get", 1006)] >= 1
        logged = calls(control)
        assert any(code == 1006 for _, code, *_ in logged)
        assert any(code == 0 and retry > 0 for _, code, retry, *_ in logged)
        # a platform that never stops refusing: a Transient error after the configured retries
        fake.settings.rate_limit_every = 1
        stubborn = TracksolidClient("jimi", config(fake, rate_limit_retries=2), ledger(control))
        before = len(fake.calls)
        with pytest.raises(ApiBusy) as raised:
            stubborn.call("jimi.user.device.list", {"target": "fireside"})
        assert isinstance(raised.value, Transient) and len(fake.calls) - before == 3
        assert [c[1:3] for c in calls(control)[-3:]] == [(1006, 0), (1006, 1), (1006, 2)]


def test_more_than_max_imeis_are_split_across_several_targets(control: Conn) -> None:
    with FakePlatform(devices_per_account=70, targets=("fireside", "Fireside@HQ")) as fake:
        cfg = config(fake, targets=["fireside", "Fireside@HQ"])
        client = TracksolidClient("jimi", cfg, ledger(control))
        live = records(client, cfg, "live_positions")
        assert sorted(r.record["imei"] for r in live) == sorted(fake.imeis_of())  # 140 devices, both accounts
        sizes = [c.imeis for c in fake.calls if c.method == "jimi.device.location.get"]
        assert sorted(sizes) == [20, 20, 50, 50] and max(c.imeis for c in fake.calls) <= 50
        assert {r.call["target"] for r in live} == {"fireside", "Fireside@HQ"}
        assert sorted(c[3] for c in calls(control) if c[0] == "jimi.device.location.get") == [20, 20, 50, 50]
        devices = records(client, cfg, "devices")
        assert len(devices) == 140 and all("iccid" in r.record and "vehicleNumber" in r.record for r in devices)
        # the device lists were read once per target for this fetcher, not once per endpoint call
        assert methods(fake)[("jimi.user.device.list", 0)] == 4


def test_the_fetchers_return_the_platforms_ground_truth(control: Conn) -> None:
    with FakePlatform(devices_per_account=60, malformed_share=0.01) as fake:
        cfg = config(fake)
        client = TracksolidClient("jimi", cfg, ledger(control))
        end = fake.now() - timedelta(minutes=2)
        start = end - timedelta(days=2)
        short = end - timedelta(hours=8)  # track is per device: a shorter window keeps the test fast
        for endpoint, low in (("track", short), ("alarms", start), ("trips", start), ("parking", start)):
            got = records(client, cfg, endpoint, low, end)
            truth = fake.truth(endpoint, start=low, end=end)
            assert len(truth) > 100, endpoint
            assert canon([r.record for r in got]) == canon(truth), endpoint
        # the alarms of one 50-IMEI query passed the platform's 1000-row cap: read again in halves
        alarm_calls = [c for c in fake.calls if c.method == "jimi.device.alarm.list"]
        assert any(c.params["page_no"] == "10" for c in alarm_calls)
        # trip distances stay as the platform sent them (metres); both duration spellings are kept
        trips = records(client, cfg, "trips", start, end)
        assert all(isinstance(r.record["distance"], int) and r.record["runTimeSecond"] == r.record["elapsed"]
                   for r in trips)
        assert max(r.record["distance"] for r in trips) > 1000
        # the injected malformed points come through unchanged, for the load to keep in raw
        track = records(client, cfg, "track", short, end)
        assert any(r.record.get("gpsTime") == "not a time" or "lat" not in r.record for r in track)
        # windows touch: (a, b] then (b, c] read every point once
        middle = short + timedelta(hours=4)
        halves = records(client, cfg, "track", short, middle) + records(client, cfg, "track", middle, end)
        assert canon([r.record for r in halves]) == canon([r.record for r in track])


def test_a_platform_that_ignores_paging_is_read_once_and_the_reads_end(control: Conn) -> None:
    """Every page request answered with all rows (paging parameters ignored): each record once, no endless loop;
    a device whose detail is refused keeps its list record."""
    with FakePlatform(devices_per_account=40, ignore_paging=True) as fake:
        cfg = config(fake)
        client = TracksolidClient("jimi", cfg, ledger(control))
        end = fake.now() - timedelta(minutes=2)
        start = end - timedelta(days=2)
        for endpoint in ("alarms", "trips", "parking"):
            got = records(client, cfg, endpoint, start, end)
            truth = fake.truth(endpoint, start=start, end=end)
            assert len(truth) > 100, endpoint  # more than one page's worth
            assert canon([r.record for r in got]) == canon(truth), endpoint


def test_late_fixes_appear_when_a_window_is_read_again_later(control: Conn) -> None:
    with FakePlatform(devices_per_account=15, late_share=0.3, late_delay_s=(600, 1800)) as fake:
        cfg = config(fake)
        client = TracksolidClient("jimi", cfg, ledger(control))
        end = fake.now()
        start = end - timedelta(hours=6)
        first = records(client, cfg, "track", start, end)
        fake.advance(1900)
        again = records(client, cfg, "track", start, end)
        keys = {(r.record["imei"], r.record["gpsTime"]) for r in first}
        gained = [r.record for r in again if (r.record["imei"], r.record["gpsTime"]) not in keys]
        assert gained and all(p["gpsMode"] == 1 for p in gained)
        assert canon([r.record for r in again]) == canon(fake.truth("track", start=start, end=end))
        assert len(again) == len(first) + len(gained)


def test_budgets_and_an_unreachable_platform(control: Conn) -> None:
    with FakePlatform(devices_per_account=3) as fake:
        client = TracksolidClient("jimi", config(fake, max_calls_per_run=2), ledger(control))
        client.call("jimi.user.device.list", {"target": "fireside"}, run_id=1)  # token.get + this call
        with pytest.raises(CallBudgetExceeded, match="max_calls_per_run"):
            client.call("jimi.user.device.list", {"target": "fireside"}, run_id=1)
        assert len(fake.calls) == 2
        client.call("jimi.user.device.list", {"target": "fireside"}, run_id=2)  # a new run, a new budget
        paced = TracksolidClient("jimi", config(fake, calls_per_minute=120), ledger(control))
        began = time.monotonic()
        for _ in range(122):  # the bucket starts full (120): the last two wait about half a second each
            paced.call("jimi.user.device.list", {"target": "fireside"})
        assert time.monotonic() - began >= 0.9
        gone = config(fake)
    down = TracksolidClient("jimi", gone, ledger(control))  # the fake has stopped: nothing listens
    with pytest.raises(SourceUnreachable):
        down.call("jimi.user.device.list", {"target": "fireside"})
    assert calls(control)[-1][:2] == ("jimi.user.device.list", None)  # with the token cached in the ledger


def test_refused_logins_name_the_setting_and_nothing_secret_leaks(control: Conn) -> None:
    with FakePlatform(devices_per_account=20, rate_limit_every=5) as fake:
        cfg = config(fake, targets=["fireside"])
        client = TracksolidClient("jimi", cfg, ledger(control))
        lines = b"".join(r.to_line() for ep in ("devices", "live_positions") for r in records(client, cfg, ep))
        end = fake.now()
        lines += b"".join(r.to_line() for r in records(client, cfg, "track", end - timedelta(hours=3), end))
        fake.revoke_all_tokens()
        lines += b"".join(r.to_line() for r in records(client, cfg, "alarms", end - timedelta(hours=3), end))
        for wrong, setting in (({"password_md5": "0" * 32}, "password_md5"),
                               ({"app_secret": "nope-nope"}, "app_secret")):
            bad = config(fake, **wrong)
            with pytest.raises(SourceRefused, match=setting) as raised:
                TracksolidClient("other", bad, ledger(control)).call("jimi.user.device.list", {"target": "fireside"})
            assert all(s not in str(raised.value) for s in bad.secret_values())
        cached = control.execute(f"SELECT access_token, refresh_token FROM {CONTROL}.api_tokens").fetchone()
        assert cached is not None and set(cached) <= set(fake.tokens_issued())
        secrets = [*fake.tokens_issued(), *cfg.secret_values()]
        logged = json.dumps(control.execute(f"SELECT * FROM {CONTROL}.api_calls").fetchall(), default=str)
        assert len(secrets) >= 6 and methods(fake)[("jimi.oauth.token.get", 0)] >= 2
        for secret in secrets:
            assert secret not in logged and secret.encode() not in lines
        assert b'"sign"' not in lines and b"app_key" not in lines and b"access_token" not in lines
        held = client._token
        assert held is not None and held.access_token not in repr(held) + repr(client)


def test_the_source_streams_json_lines_on_the_platforms_clock(control: Conn) -> None:
    with FakePlatform(devices_per_account=30) as fake:
        cfg = config(fake)
        source = open_source("jimi", cfg, SourceEnv(ledger=ledger(control)))
        live = TableConfig(name="api_live", source="jimi", endpoint="live_positions")
        fake.advance(3600)  # the platform's clock runs an hour ahead of this machine
        extract = source.extract(live, [], Window(None, None, run_id=41))
        chunks = list(extract)
        assert extract.rows == 30 and len(b"".join(chunks).splitlines()) == 30
        assert all(ApiRecord.from_line(line).call["method"] == "jimi.device.location.get"
                   for line in b"".join(chunks).splitlines())
        track = TableConfig(name="api_track", source="jimi", endpoint="track", settle="2 minutes")
        bound = source.upper_bound(track)
        assert abs((bound.source_clock - fake.now()).total_seconds()) < 3
        assert bound.upper == (bound.source_clock - timedelta(minutes=2)).replace(microsecond=0)
        # no start: the first window reaches `since` back; the lines match the fetchers' records exactly
        extract = source.extract(track, [], Window(None, bound.upper, run_id=42))
        lines = b"".join(extract).splitlines(keepends=True)
        start = bound.upper - track.since_interval
        assert extract.rows == len(lines) == len(fake.truth("track", start=start, end=bound.upper))
        assert {ApiRecord.from_line(line).to_line() for line in lines} == set(lines)
        assert control.execute(f"SELECT count(*) FROM {CONTROL}.api_calls WHERE run_id = 42 "
                               "AND table_name = 'api_track'").fetchone() == (31,)  # the list + 30 devices
        assert {"imei", "gps_time"} <= {c.name for c in source.describe(track)}  # the key and the watermark
        pushed = TableConfig(name="api_obd", source="jimi", endpoint="pushobd")
        assert any("tracksolid_push" in p for p in source.check(pushed, []))
        info = source.server_info()  # verify's connection gate: a signed call answered for the login
        assert source.visibility().read_all_stats and info is not None and info.user == fake.settings.login
        source.close()
