"""The CDC slot's health in `status`, `/metrics`, the status page and `verify`: retained WAL and
unconfirmed WAL read at the source, lag and heartbeat from the warehouse's record; verify fails when the
slot is gone (saying to resync) or retains more WAL than `cdc.max_retained_wal`. A config without cdc
tables contacts no slot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bronzeline.observe import facts, metrics, page
from bronzeline.observe.model_facts import models_view
from bronzeline.observe.slots import slots_json
from tests.cli import Result, invoke
from tests.integration.pipeline import Pipeline

TABLES = "  - {name: devices, from: tracksolid.devices, mode: cdc, key: [id]}\n"


@pytest.fixture
def cdc(pipeline: Pipeline) -> Iterator[tuple[Pipeline, str]]:
    """A migrated cdc table and a pgoutput slot of the test's own name (slots are cluster-wide), dropped
    at the end: a database with a slot cannot be dropped."""
    slot = f"bl_test_{uuid.uuid4().hex[:12]}"
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.devices (id int PRIMARY KEY, plate text)")
        conn.execute("CREATE PUBLICATION bronzeline_fleet FOR TABLE tracksolid.devices")
        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(
            sql.Identifier(str(conninfo_to_dict(pipeline.source_dsn)["user"]))))
    configure(pipeline, slot)
    cli(pipeline, "migrate", check=True)
    with pipeline.src() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        yield pipeline, slot
    finally:
        with pipeline.src() as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", (slot,))


def cli(pipeline: Pipeline, *args: str, check: bool = False) -> Result:
    """`bronzeline -c CONFIG ARGS` in process."""
    proc = invoke(pipeline.tmp, "-c", str(pipeline.config_path), *args, env=pipeline.environ())
    assert not check or proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def configure(pipeline: Pipeline, slot: str, limit: str = "1GB") -> None:
    pipeline.write_config(TABLES, f"cdc: {{slot: {slot}, max_retained_wal: {limit}}}\n")


def write_wal(pipeline: Pipeline, rows: int = 2000) -> None:
    with pipeline.src() as conn:
        conn.execute("INSERT INTO tracksolid.devices SELECT g, repeat('x', 200) FROM generate_series(1, %s) g "
                     "ON CONFLICT (id) DO UPDATE SET plate = EXCLUDED.plate || '!'", (rows,))


def status(pipeline: Pipeline) -> dict[str, Any]:
    return json.loads(cli(pipeline, "status", "--json", check=True).stdout)


def slot_gate(pipeline: Pipeline) -> tuple[int, dict[str, Any]]:
    proc = cli(pipeline, "verify", "--json")
    report = json.loads(proc.stdout)
    found = [g for g in report["gates"] if g["gate"] == "cdc_slot"]
    assert len(found) == 1, report["gates"]
    return proc.returncode, found[0]


def scrape(pipeline: Pipeline) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics as the server renders it: {sample name: {labels: value}}."""
    with pipeline.context() as ctx:
        text = metrics.render("fleet", lambda: facts.table_facts(ctx), lambda: models_view(ctx),
                              lambda: slots_json(ctx)).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def record_applied(pipeline: Pipeline, slot: str) -> None:
    """What the apply side records after a page (as the warehouse login, like migrate's control tables)."""
    with psycopg.connect(pipeline.warehouse_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS dwh_control.cdc_slots (slot_name text PRIMARY KEY, source text, "
                     "applied_lsn pg_lsn, applied_at timestamptz, source_commit_at timestamptz, "
                     "heartbeat_at timestamptz, created_at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO dwh_control.cdc_slots (slot_name, source, applied_lsn, applied_at, "
                     "source_commit_at, heartbeat_at) VALUES (%s, 'source', '0/1000', now() - interval '20 s', "
                     "now() - interval '30 s', now() - interval '5 s')", (slot,))


def test_slot_health_in_status_metrics_page_and_verify(cdc: tuple[Pipeline, str]) -> None:
    pipeline, slot = cdc
    write_wal(pipeline)
    row = status(pipeline)["slots"][0]
    assert row["slot"] == slot and row["source"] == "source" and row["tables"] == ["devices"]
    assert row["exists"] is True and row["active"] is False and row["wal_status"] == "reserved"
    assert row["retained_wal_bytes"] > 2000 * 200 and row["confirmed_lag_bytes"] > 2000 * 200
    assert row["max_retained_wal_bytes"] == 1 << 30 and row["lag_seconds"] is None and row["error"] is None

    record_applied(pipeline, slot)
    row = status(pipeline)["slots"][0]
    assert 29 < row["lag_seconds"] < 120 and row["applied_lsn"] == "0/1000"
    assert row["last_heartbeat_at"] is not None and row["last_heartbeat_at"].endswith("+00:00")
    text = cli(pipeline, "status", check=True).stdout
    assert f"slot {slot} at source 'source' (devices): not active, wal_status reserved, retains" in text

    seen = scrape(pipeline)
    labels = (("slot", slot), ("source", "source"))
    assert seen["bronzeline_cdc_slot_retained_wal_bytes"][labels] > 2000 * 200
    assert seen["bronzeline_cdc_slot_confirmed_lag_bytes"][labels] > 2000 * 200
    assert seen["bronzeline_cdc_slot_lost"][labels] == 0 and seen["bronzeline_cdc_slot_exists"][labels] == 1
    assert seen["bronzeline_cdc_slot_wal_status"][(*labels, ("wal_status", "reserved"))] == 1
    assert 29 < seen["bronzeline_cdc_lag_seconds"][labels] < 120
    assert seen["bronzeline_cdc_last_heartbeat_timestamp_seconds"][labels] > 0
    with pipeline.context() as ctx:
        html = page.render(ctx.config, page.gather(ctx, 50))
    assert "Change data capture" in html and slot in html and "idle" in html

    code, gate = slot_gate(pipeline)
    assert gate["status"] == "pass" and gate["numbers"]["retained_wal_bytes"] > 2000 * 200, gate
    assert code == 1  # the table has never loaded: other gates fail, this one does not

    configure(pipeline, slot, limit="1kB")
    code, gate = slot_gate(pipeline)
    assert code == 1 and gate["status"] == "fail" and "more than cdc.max_retained_wal (1.0 kB)" in gate["detail"]

    with pipeline.src() as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    code, gate = slot_gate(pipeline)
    assert code == 1 and gate["status"] == "fail", gate
    assert "is gone (dropped)" in gate["detail"] and "run `bronzeline resync devices`" in gate["detail"]
    row = status(pipeline)["slots"][0]
    assert row["exists"] is False and row["retained_wal_bytes"] is None
    assert "missing; if it existed before, its changes are lost: run `bronzeline resync devices`" in \
        cli(pipeline, "status", check=True).stdout
    seen = scrape(pipeline)
    assert seen["bronzeline_cdc_slot_lost"][labels] == 1
    assert seen["bronzeline_cdc_slot_wal_status"][(*labels, ("wal_status", "missing"))] == 1
    with pipeline.context() as ctx:
        html = page.render(ctx.config, page.gather(ctx, 50))
    assert "1 cdc slot(s) missing, lost or over the WAL limit" in html


def test_a_slot_never_created_fails_verify_with_both_ways_out(cdc: tuple[Pipeline, str]) -> None:
    pipeline, slot = cdc
    configure(pipeline, f"{slot}_never")
    code, gate = slot_gate(pipeline)
    assert code == 1 and gate["status"] == "fail"
    assert "the first `bronzeline run` (or `stream`) of a cdc table creates it" in gate["detail"]
    assert "run `bronzeline resync devices`" in gate["detail"]


def test_without_cdc_tables_no_slot_is_read(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.devices (id int PRIMARY KEY, plate text)")
    pipeline.write_config("  - {name: devices, from: tracksolid.devices, mode: snapshot, key: [id]}\n")
    cli(pipeline, "migrate", check=True)
    assert status(pipeline)["slots"] == []
    _, gate = slot_gate(pipeline)
    assert gate["status"] == "skip" and gate["detail"] == "no cdc tables"
