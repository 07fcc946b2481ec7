"""`bronzeline serve`: /healthz, /api/status, /metrics (parsed as Prometheus text), the status page in
headless Chromium, and read-only access to the warehouse."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from bronzeline.config import load_config
from bronzeline.observe.server import Reader, create_app, serving_config
from tests.integration.pipeline import Pipeline
from tests.integration.test_core import TABLES, insert_positions, setup
from tests.integration.test_models_observe import record_builds, with_models

PINGS = """\
  - name: pings
    from: tracksolid.pings
    watermark: recorded_at
    key: [id]
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Reply:
    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status, self.headers, self.text = status, headers, text

    def json(self) -> Any:
        return json.loads(self.text)


def get(url: str) -> Reply:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode())


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """The app on a real HTTP server in a thread (as `serve` runs it), for the tests in this process."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def history(pipeline: Pipeline) -> None:
    """Four real runs with growing batches, and one real failure (a key that is not unique) that the next
    run recovers from; models with a history of builds, one failed on its check and one blocked by it."""
    setup(pipeline, rows=400)
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.pings (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.pings (id) SELECT g FROM generate_series(1, 50) g")
    with_models(pipeline, TABLES + PINGS)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        record_builds(conn)
    for i, extra in enumerate((900, 2500, 1200)):
        with pipeline.src() as conn:
            insert_positions(conn, extra, start=400 + 10_000 * (i + 1))
            conn.execute("INSERT INTO tracksolid.pings (id) SELECT g FROM generate_series(%s::int, %s::int) g",
                         (100 * (i + 1), 100 * (i + 1) + 20))
            if i == 1:
                conn.execute("INSERT INTO tracksolid.pings (id) VALUES (100), (100)")  # one key twice
        time.sleep(0.15)
        proc = pipeline.cli("run")
        assert proc.returncode == (1 if i == 1 else 0), proc.stderr
        if i == 1:
            with pipeline.src() as conn:
                conn.execute("DELETE FROM tracksolid.pings WHERE id = 100")


@pytest.fixture
def served(pipeline: Pipeline) -> Iterator[tuple[Pipeline, str]]:
    history(pipeline)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bronzeline.cli", "-c", str(pipeline.config_path), "serve", "--port", str(port)],
        env=pipeline.environ(), cwd=pipeline.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"{url}/healthz").status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "serve did not answer /healthz within 30 s"
            time.sleep(0.2)
        yield pipeline, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_endpoints_metrics_and_page_in_chromium(served: tuple[Pipeline, str], tmp_path: Path) -> None:
    pipeline, url = served
    health = get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["project"] == "fleet"

    # /api/status is the `status --json` document
    api = get(f"{url}/api/status").json()
    cli = json.loads(pipeline.cli("status", "--json", check=True).stdout)
    stable = ("table", "mode", "last_loaded_at", "watermark", "rows_loaded_last_run", "pending_files", "failures_24h")
    assert [{k: t[k] for k in stable} for t in api["tables"]] == [{k: t[k] for k in stable} for t in cli["tables"]]
    assert set(api["tables"][0]) == set(cli["tables"][0])

    # /metrics parses as Prometheus text and agrees with the run ledger
    response = get(f"{url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("bronzeline_up", ())] == 1

    def metric(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    with pipeline.wh() as conn:
        ledger = {(t, s): (n, ins, skp) for t, s, n, ins, skp in conn.execute(
            "SELECT table_name, status, count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_skipped), 0) "
            "FROM dwh_control.extract_runs GROUP BY 1, 2").fetchall()}
        last = conn.execute("SELECT extract(epoch FROM run_finished_at - run_started_at) FROM dwh_control.extract_runs "
                            "WHERE table_name = 'position_history' AND status = 'loaded' ORDER BY run_id DESC "
                            "LIMIT 1").fetchone()
    inserted = ledger[("position_history", "loaded")][1]
    assert metric("bronzeline_rows_inserted_total", table="position_history") == inserted == 400 + 900 + 2500 + 1200
    assert metric("bronzeline_rows_skipped_total", table="devices") == ledger[("devices", "loaded")][2] > 0
    assert metric("bronzeline_runs", table="pings", status="failed") == 1 == ledger[("pings", "failed")][0]
    assert metric("bronzeline_runs", table="position_history", status="loaded") == 4
    assert metric("bronzeline_runs", table="position_history", status="extracting") == 0
    assert metric("bronzeline_failed_runs_24h", table="pings") == 1
    assert metric("bronzeline_pending_files", table="position_history") == 0
    assert last is not None and metric("bronzeline_last_run_duration_seconds", table="position_history") == \
        pytest.approx(float(last[0]), abs=1e-3)
    assert 0 <= metric("bronzeline_seconds_since_last_load", table="devices") < 120
    assert 0 <= metric("bronzeline_watermark_lag_seconds", table="position_history") < 120
    assert metric("bronzeline_freshness_limit_seconds", table="devices") == 2 * 86400

    # the vendored chart library is served from the package, not a CDN
    js = get(f"{url}/static/uPlot.iife.min.js")
    assert js.status == 200 and "uPlot" in js.text
    html = get(f"{url}/").text
    assert "cdn" not in html.lower() and "https://" not in html

    # the page in headless Chromium: tables, the failure with its error, and both charts drawn with data
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/test.sh installs it)"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1500",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", f"{url}/"], capture_output=True, text=True, timeout=60).stdout
    for name in ("position_history", "devices", "pings"):
        assert f"<b>{name}</b>" in dom
    assert "share one key" in dom  # the failed run's error, in Recent failures
    assert dom.count('class="uplot') == 2 and dom.count("<canvas") == 2
    legend = dom[dom.index('id="chart-rows"'):dom.index('id="chart-duration"')]
    assert all(name in legend for name in ("position_history", "devices", "pings"))
    # the model graph, drawn server-side: the model that failed its check red, what it blocked red, the rest green
    graph = dom[dom.index('<svg class="model-graph"'):dom.index("</svg>")]
    failed = graph[graph.index('<g class="node failed" data-model="silver.fixes">'):]
    assert 'fill="#fee2e2" stroke="#dc2626"' in failed[:failed.index("</g>")]
    assert '<g class="node blocked" data-model="gold.device_speed">' in graph
    built = graph[graph.index('<g class="node built" data-model="silver.devices_clean">'):]
    assert 'fill="#dcfce7" stroke="#16a34a"' in built[:built.index("</g>")]
    assert graph.count("<path class=\"edge") == 5
    shot = Path(os.environ.get("BRONZELINE_SCREENSHOT") or tmp_path / "status-page.png")
    subprocess.run([*flags, f"--screenshot={shot}", f"{url}/"], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 20_000


def test_healthz_503_and_metrics_down_when_the_warehouse_does_not_answer(tmp_path: Path) -> None:
    config_path = tmp_path / "bronzeline.yml"
    config_path.write_text(
        "project: fleet\nconnections:\n  source: {dsn: \"${SOURCE_DSN}\"}\n  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
        "blob: {url: file://./blob}\ntables:\n  - {name: things, from: public.things, watermark: t, key: [id]}\n")
    down = "host=127.0.0.1 port=1 dbname=x user=x password=${PW} connect_timeout=2"
    config = load_config(config_path, {"SOURCE_DSN": down, "WAREHOUSE_DSN": down, "PW": "Secret123"})
    with running(create_app(config)) as url:
        health = get(f"{url}/healthz")
        assert health.status == 503 and health.json()["status"] == "unavailable"
        assert "Secret123" not in health.text and "cannot connect" in health.json()["error"]
        assert get(f"{url}/api/status").status == 503
        page = get(f"{url}/")
        assert page.status == 503 and "warehouse unavailable" in page.text
        metrics = get(f"{url}/metrics")
        assert metrics.status == 200
        values = {s.name: s.value for f in text_string_to_metric_families(metrics.text) for s in f.samples}
        assert values["bronzeline_up"] == 0


def test_serve_reads_as_the_read_only_role_and_never_writes(pipeline: Pipeline, pg_admin_dsn: str) -> None:
    ro, ro_login = f"bl_ro_{uuid.uuid4().hex[:8]}", f"bl_rologin_{uuid.uuid4().hex[:8]}"
    owner = str(psycopg.conninfo.conninfo_to_dict(pipeline.warehouse_dsn)["user"])
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ro)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(ro_login), sql.Literal(pipeline.password), sql.Identifier(ro)))
    try:
        setup(pipeline, rows=50)
        ro_dsn = pipeline.warehouse_dsn.replace(f"user={owner}", f"user={ro_login}")
        pipeline.env["RO_DSN"] = ro_dsn
        pipeline.write_config(TABLES, extra_yaml=f"warehouse:\n  roles: {{readonly: {ro}}}\n")
        text = pipeline.config_path.read_text().replace(
            "connections:\n", "connections:\n  warehouse_ro: {dsn: \"${RO_DSN}\"}\n")
        pipeline.config_path.write_text(text)
        pipeline.cli("migrate", check=True)
        pipeline.cli("run", check=True)
        config = pipeline.config()

        # the owner login is not in the read-only role: served read-only as itself, with a note
        reader = Reader(config, ro)
        assert reader.read(lambda ctx: ctx.warehouse.execute("SELECT current_user").fetchone()) == (owner,)
        assert reader.notes and f"GRANT {ro} TO {owner}" in reader.notes[0]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.read(lambda ctx: ctx.warehouse.execute("CREATE TABLE bronze.nope (a int)"))
        reader.close()

        # once the login is in the role, the session takes it (SET ROLE) and still cannot write
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(ro), sql.Identifier(owner)))
        app = create_app(config)
        with running(app) as url:
            assert get(f"{url}/healthz").json()["role"] == ro
            status = get(f"{url}/api/status").json()
            assert [t["table"] for t in status["tables"]] == ["position_history", "devices"]
            assert status["tables"][0]["rows_loaded_last_run"] == 50
            reader = app.state.reader
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                # even with read-only transactions switched off, the role may not write
                reader.read(lambda ctx: (ctx.warehouse.execute("SET default_transaction_read_only = off"),
                                         ctx.warehouse.execute("DELETE FROM bronze.devices")))

        # --connection: a connection whose login is the read-only role
        with running(create_app(serving_config(config, "warehouse_ro"))) as url:
            assert get(f"{url}/healthz").json()["role"] == ro
            assert get(f"{url}/").status == 200
        with pipeline.wh() as conn:
            assert conn.execute("SELECT count(*) FROM bronze.devices").fetchone() == (80,)
    finally:
        with psycopg.connect(pipeline.warehouse_admin, autocommit=True) as conn:
            for role in (ro, ro_login):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pipeline.source_admin, autocommit=True) as conn:
            for role in (ro, ro_login):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            for role in (ro_login, ro):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
