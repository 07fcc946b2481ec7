"""`bronzeline drift` (source vs bronze, what to do) and `schema_evolution: add_columns` in `migrate`:
new columns are added as nullable columns, nothing is ever dropped or retyped."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.integration.pipeline import Pipeline, table_digest
from tests.integration.test_core import TABLES, insert_positions, setup

TRIPS_SQL = """
CREATE TABLE tracksolid.trips (id bigint PRIMARY KEY, imei varchar(15) NOT NULL, distance_m numeric(10,1),
                               recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.trips (id, imei, distance_m) SELECT g, '35354900000' || lpad(g::text, 4, '0'), g * 1500.5
FROM generate_series(1, 40) g;
"""
TRIPS = """\
  - name: trips
    query: SELECT id, imei, distance_m, recorded_at FROM tracksolid.trips
    watermark: recorded_at
    key: [id]
"""


def drift(pipeline: Pipeline) -> tuple[int, dict[str, Any]]:
    proc = pipeline.cli("drift", "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def changes(report: dict[str, Any], table: str) -> dict[tuple[str, str], dict[str, Any]]:
    found = next(t for t in report["tables"] if t["table"] == table)
    return {(c["kind"], c["column"]): c for c in found["changes"]}


def test_drift_reports_every_kind_of_change_and_what_to_do(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    with pipeline.src() as conn:
        conn.execute(TRIPS_SQL)
    pipeline.write_config(TABLES + TRIPS)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    code, report = drift(pipeline)
    assert code == 0 and report["drift"] is False
    assert [t["status"] for t in report["tables"]] == ["ok", "ok", "ok"]
    assert "3 table(s) agree" in pipeline.cli("drift").stdout

    with pipeline.src() as conn:
        conn.execute("ALTER TABLE tracksolid.position_history ADD COLUMN battery_pct smallint, "
                     "ALTER COLUMN speed TYPE numeric(7,2), ALTER COLUMN heading TYPE integer, "
                     "DROP COLUMN ignition")
        conn.execute("ALTER TABLE tracksolid.devices ALTER COLUMN imei TYPE varchar(20), "
                     "ALTER COLUMN fuel_per_100km TYPE numeric(4,1)")
        conn.execute("ALTER TABLE tracksolid.trips RENAME COLUMN distance_m TO distance_km")
        conn.execute("UPDATE tracksolid.trips SET distance_km = distance_km / 1000")
    # the query must follow the source; drift then shows the unit change it implies
    pipeline.write_config(TABLES + TRIPS.replace("distance_m,", "distance_km,"))

    code, report = drift(pipeline)
    assert code == 1 and report["drift"] is True
    ph = changes(report, "position_history")
    assert set(ph) == {("added", "battery_pct"), ("typmod", "speed"), ("retyped", "heading"),
                       ("removed", "ignition")}
    assert "schema_evolution: add_columns" in ph[("added", "battery_pct")]["action"]
    speed = ph[("typmod", "speed")]
    assert (speed["source_type"], speed["bronze_type"]) == ("numeric(7,2)", "numeric(5,2)")
    assert "widened" in speed["action"] and \
        'ALTER TABLE "bronze"."position_history" ALTER COLUMN "speed" TYPE numeric(7,2)' in speed["action"]
    heading = ph[("retyped", "heading")]
    assert (heading["source_type"], heading["bronze_type"]) == ("integer", "smallint")
    assert "never retypes" in heading["action"] and 'USING "heading"::integer' in heading["action"]
    assert "never drops" in ph[("removed", "ignition")]["action"]
    assert 'DROP COLUMN "ignition"' in ph[("removed", "ignition")]["action"]
    devices = changes(report, "devices")
    imei = devices[("typmod", "imei")]
    assert (imei["source_type"], imei["bronze_type"]) == ("character varying(20)", "character varying(15)")
    assert "widened" in imei["action"]
    assert "narrowed" in devices[("typmod", "fuel_per_100km")]["action"]
    trips = changes(report, "trips")
    assert set(trips) == {("added", "distance_km"), ("removed", "distance_m"), ("unit", "distance_km")}
    assert "km instead of m" in trips[("unit", "distance_km")]["action"]
    text = pipeline.cli("drift")
    assert text.returncode == 1 and "3 of 3 table(s) differ" in text.stdout and "unit" in text.stdout

    # migrate without add_columns changes nothing and says why; runs refuse until bronze matches
    with pipeline.wh() as wh:
        before = wh.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                            "'bronze.position_history'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()
    migrate = pipeline.cli("migrate")
    assert migrate.returncode == 1 and "battery_pct" in migrate.stderr and "heading" in migrate.stderr
    with pipeline.wh() as wh:
        after = wh.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                           "'bronze.position_history'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()
    assert after == before


def test_add_columns_adds_nullable_columns_and_never_drops_or_retypes(pipeline: Pipeline) -> None:
    setup(pipeline, rows=100)
    evolving = TABLES.replace("    geometry: [geom]\n", "    geometry: [geom]\n    schema_evolution: add_columns\n")
    pipeline.write_config(evolving)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)

    with pipeline.src() as conn:
        conn.execute("ALTER TABLE tracksolid.position_history ADD COLUMN battery_pct smallint NOT NULL DEFAULT 87, "
                     "ADD COLUMN odometer_km numeric(9,1)")
    code, report = drift(pipeline)
    assert code == 1
    added = changes(report, "position_history")
    assert set(added) == {("added", "battery_pct"), ("added", "odometer_km")}
    assert "run `bronzeline migrate`: it adds battery_pct smallint" in added[("added", "battery_pct")]["action"]

    migrate = pipeline.cli("migrate", check=True)
    assert "added column battery_pct smallint" in migrate.stdout
    assert "added column odometer_km numeric(9,1)" in migrate.stdout
    with pipeline.wh() as wh:
        cols = {r[0]: (r[1], r[2]) for r in wh.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = 'bronze.position_history'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()}
    assert cols["battery_pct"] == ("smallint", False) and cols["odometer_km"] == ("numeric(9,1)", False)
    assert drift(pipeline)[0] == 0
    assert "added column" not in pipeline.cli("migrate", check=True).stdout  # idempotent

    # new rows carry the new columns; old rows keep NULL there (they were loaded before the column existed)
    with pipeline.src() as conn:
        insert_positions(conn, 20, start=100)
    time.sleep(0.15)
    pipeline.cli("run", check=True)
    with pipeline.wh() as wh:
        counts = wh.execute("SELECT count(*) FILTER (WHERE battery_pct = 87), count(*) FILTER (WHERE battery_pct "
                            "IS NULL) FROM bronze.position_history").fetchone()
    assert counts == (20, 100)
    with pipeline.src() as s, pipeline.wh() as w:
        new = "id, imei, battery_pct"
        assert table_digest(s, "tracksolid.position_history", new, "id") == \
            table_digest(w, "bronze.position_history", "id, imei, coalesce(battery_pct, 87) AS battery_pct", "id")

    # a retyped or dropped source column is never followed silently, even with add_columns; and a table
    # with a problem is left exactly as it was (the new column is not added either)
    with pipeline.src() as conn:
        conn.execute("ALTER TABLE tracksolid.position_history ALTER COLUMN heading TYPE integer, "
                     "DROP COLUMN lat, ADD COLUMN driver text")
    migrate = pipeline.cli("migrate")
    assert migrate.returncode == 1
    assert "heading" in migrate.stderr and "lat" in migrate.stderr and "bronzeline drift" in migrate.stderr
    with pipeline.wh() as wh:
        types = dict(wh.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'bronze.position_history'::regclass AND attnum > 0 AND NOT attisdropped").fetchall())
    assert types["heading"] == "smallint" and types["lat"] == "double precision"
    assert "driver" not in types
    assert pipeline.cli("run", "position_history").returncode == 1
