"""`bronzeline demo --api` after its embedded server: the fake platform, the reference config's API and push
tables, two runs, `bronzeline receive` as a subprocess fed a burst of pushes, against the test cluster (the
embedded server's start is test_demo.py's business)."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg

from bronzeline.fleet.demo_api import api_pipeline, report_lines
from bronzeline.fleet.jimi_fake import FakeSettings
from bronzeline.pipeline import TableOutcome
from tests.conftest import Databases


def test_the_api_demo_fills_every_table_and_accounts_for_every_call(tmp_path: Path,
                                                                     new_database: Databases) -> None:
    dsn = new_database()
    said: list[str] = []
    runs: list[list[TableOutcome]] = []
    # A smaller fleet than the demo's, the same knobs: 1006 bursts, tokens that expire between the runs.
    settings = FakeSettings(devices_per_account=30, rate_limit_every=40, rate_limit_burst=2, token_ttl_seconds=1.0)
    result = api_pipeline(tmp_path / "demo", dsn, say=said.append, show_run=runs.append, settings=settings,
                          pushes=True)

    assert [o.status for run in runs for o in run] == ["loaded"] * (6 + 14), [o.message for r in runs for o in r]
    rows = {r.table: r for r in result.rows}
    assert len(rows) == 14 and all(r.typed > 0 and r.raw >= r.typed for r in rows.values()), rows
    assert rows["api_devices"].typed == rows["api_live_positions"].typed == 30
    assert rows["push_obd"].typed == 5 and rows["push_obd"].raw == 10  # the repeated push landed once
    assert rows["push_gps"].invalid == 2  # the body that is not JSON and the fix without its time
    assert sum(r.invalid for r in rows.values()) == 2

    # the receiver acknowledged everything, stopped on SIGTERM, and nothing listens on its port any more
    pushes = result.pushes
    assert pushes is not None and pushes.acknowledged == pushes.sent == 13 and pushes.exit_code == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", pushes.port)) != 0

    with psycopg.connect(dsn, autocommit=True) as conn:
        ledger = conn.execute("SELECT table_name, status, rows_extracted, rows_loaded, rows_skipped, rows_invalid "
                              "FROM dwh_control.extract_runs").fetchall()
        calls = dict(conn.execute("SELECT method, count(*) FROM dwh_control.api_calls GROUP BY 1").fetchall())
        refused = conn.execute("SELECT count(*) FROM dwh_control.api_calls WHERE code = 1006").fetchone()
    assert ledger and all(r[1] == "loaded" and r[2] == r[3] + r[4] for r in ledger), ledger
    assert {r[0] for r in ledger} == set(rows)
    assert sum(r[5] or 0 for r in ledger) == 2
    assert refused is not None and refused[0] >= 2
    assert calls.get("jimi.oauth.token.refresh", 0) >= 1, calls  # the token was renewed, not just fetched once
    assert result.fake_calls == sum(calls.values())  # every call the platform answered is in the call log
    (jimi,) = result.api.connections
    assert jimi.rate_limited_24h == refused[0] and jimi.renewals_24h >= 2

    text = "\n".join(said + report_lines(result))
    assert "build` is skipped" in text and "push_temperature" in text
    assert settings.app_secret not in (result.config_path.read_text() + text)
