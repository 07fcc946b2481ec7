"""The fleet reference project's silver, gold and reporting models over a loaded fleet source, on a
warehouse without PostGIS (as the demo's embedded server is): contents checked against the source."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from bronzeline.config import load_config
from bronzeline.context import Context
from bronzeline.fleet import copy_models, reference_config_text
from bronzeline.fleet.schema import create_source_schema
from bronzeline.fleet.simulator import burst, seed
from bronzeline.models.build import build
from bronzeline.models.outcome import BuildReport
from bronzeline.provision import migrate
from tests.integration.pipeline import Pipeline

EAT = ZoneInfo("Africa/Nairobi")
BAD_IMEI_SPEED = 400.0
MODELS = {"silver.vehicles": "view", "silver.trips": "table", "silver.positions": "incremental",
          "gold.daily_fleet_metrics": "incremental", "reporting.v_trips": "matview",
          "reporting.normalize_plate": "function", "reporting.fn_live_positions": "function",
          "reporting.fn_vehicle_track": "function", "reporting.fn_trips_for_map": "function"}


def rows(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def model_sql(pipe: Pipeline, relation: str) -> str:
    schema, name = relation.split(".")
    return (pipe.tmp / "models" / schema / f"{name}.sql").read_text()


def set_window(conn: psycopg.Connection[Any], start: str, end: str) -> None:
    for name, value in (("start", start), ("end", end)):
        conn.execute("SELECT set_config(%s, %s, true)", (f"bronzeline.window_{name}", value))


def build_all(pipe: Pipeline) -> BuildReport:
    """`bronzeline build`: every model built, every error check passed."""
    report = build(pipe.config())
    assert {m.model: m.materialized for m in report.models} == MODELS
    assert report.ok and all(m.status == "built" for m in report.models), json.dumps(
        [c for c in report.as_json()["sources"] if c["status"] != "pass"]
        + [m for m in report.as_json()["models"] if m["status"] != "built"], default=str, indent=1)
    assert [c.spec.name for c in report.sources if c.status != "pass"] == []
    return report


@pytest.fixture
def fleet(pipeline: Pipeline) -> Iterator[Pipeline]:
    """A seeded fleet source, without PostGIS on either side, loaded once into bronze with the reference
    config; the shipped models beside the config."""
    for dsn in (pipeline.source_admin, pipeline.warehouse_admin):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP EXTENSION IF EXISTS postgis CASCADE")
    with pipeline.src() as conn:
        create_source_schema(conn, postgis=False)
        seed(conn, days=2, devices=40, seed=3)
        imei = one(conn, "SELECT imei FROM tracksolid.position_history ORDER BY id LIMIT 1")
        # A glitch the silver layer must flag, and a fix reported twice (poll and track_list).
        conn.execute("""INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed, source)
                        VALUES (%s, now() - interval '3 hours', 95, 37, %s, 'poll')""", (imei, BAD_IMEI_SPEED))
        conn.execute("""INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed, heading, ignition,
                                                                 source)
                        SELECT imei, gps_time, lat, lng, speed, heading, ignition,
                               CASE source WHEN 'poll' THEN 'track_list' ELSE 'poll' END
                        FROM tracksolid.position_history WHERE imei = %s AND speed < 250
                        ORDER BY id DESC LIMIT 1
                        ON CONFLICT DO NOTHING""", (imei,))
    pipeline.config_path.write_text(reference_config_text(postgis=False))
    copy_models(pipeline.tmp)
    with Context(load_config(pipeline.config_path, pipeline.environ())) as ctx:
        migrate(ctx)
    time.sleep(0.15)  # the window's bound stays below the source clock
    outcomes = pipeline.run()
    assert all(o.status == "loaded" for o in outcomes), [(o.table, o.message) for o in outcomes]
    yield pipeline


def test_shipped_models_build_with_the_right_contents(fleet: Pipeline) -> None:
    report = build_all(fleet)
    checks = {(c.spec.relation, c.spec.name): c for m in report.models for c in m.checks}
    # the glitch is flagged and counted, within the share the domain allows
    assert checks[("silver.positions", "expression_is_true")].failing_rows >= 1
    assert checks[("silver.positions", "unique")].status == "pass"
    with fleet.src() as src, fleet.wh() as wh:
        # silver.trips: one row per trip, kilometres = the source's metres / 1000, the vehicle's plate
        source_trips = {r[0]: r[1:] for r in rows(src, """
            SELECT t.id, t.distance_m, t.driving_seconds, d.plate FROM tracksolid.trips t
            JOIN tracksolid.devices d USING (imei)""")}
        silver = {r[0]: r[1:] for r in rows(wh, """
            SELECT trip_id, distance_km, driving_seconds, vehicle_number, driving_time FROM silver.trips""")}
        assert len(source_trips) > 20 and silver.keys() == source_trips.keys()
        for trip_id, (metres, seconds, plate) in source_trips.items():
            km, driving, vehicle, driving_time = silver[trip_id]
            assert km == (Decimal(metres) / 1000).quantize(Decimal("0.001")), trip_id
            assert (driving, vehicle) == (seconds, plate)
            assert driving_time == timedelta(seconds=seconds or 0)

        # silver.positions: every (imei, gps_time) once, glitches flagged
        distinct = one(src, "SELECT count(DISTINCT (imei, gps_time)) FROM tracksolid.position_history")
        total = one(src, "SELECT count(*) FROM tracksolid.position_history")
        assert total > distinct == one(wh, "SELECT count(*) FROM silver.positions")
        assert one(wh, "SELECT count(*) FROM (SELECT imei, gps_time FROM silver.positions "
                       "GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
        assert rows(wh, "SELECT speed_kmh, impossible_speed, bad_coordinates FROM silver.positions "
                        "WHERE impossible_speed OR bad_coordinates") == [(BAD_IMEI_SPEED, True, True)]

        # gold.daily_fleet_metrics against an aggregate written by hand from the source
        assert gold(wh) == expected_gold(src)
        assert one(wh, "SELECT count(*) FROM gold.daily_fleet_metrics") > 10

        # reporting: the matview, and the functions return rows
        assert one(wh, "SELECT count(*) FROM reporting.v_trips") == len(source_trips)
        assert one(wh, "SELECT count(*) FROM reporting.v_trips WHERE start_lat IS NULL") < len(source_trips) / 10
        assert one(wh, "SELECT reporting.normalize_plate(' kdk-829a ')") == "KDK829A"
        assert one(wh, "SELECT reporting.normalize_plate(' - ')") is None
        live = one(src, "SELECT count(*) FROM tracksolid.live_positions")
        assert live > 0 and one(wh, "SELECT count(*) FROM reporting.fn_live_positions()") == live
        city, ignition = rows(src, "SELECT d.city, l.ignition FROM tracksolid.live_positions l "
                                   "JOIN tracksolid.devices d USING (imei) WHERE l.ignition IS NOT NULL LIMIT 1")[0]
        on_off = "on" if ignition else "off"
        in_city = rows(wh, "SELECT imei, city, acc_status FROM reporting.fn_live_positions(%s, %s)",
                       (city.upper(), on_off))
        assert in_city and all(r[1] == city and r[2] == on_off for r in in_city)
        assert in_city == rows(wh, "SELECT imei, city, acc_status FROM reporting.fn_live_positions(%s, %s)",
                               (city, "1" if ignition else "0"))

        plate, imei = rows(src, """SELECT d.plate, d.imei FROM tracksolid.devices d JOIN tracksolid.trips t
                                   USING (imei) GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1""")[0]
        typed = plate.lower().replace(" ", "-")
        track = rows(wh, "SELECT imei, gps_time FROM reporting.fn_vehicle_track(%s, 72)", (typed,))
        assert track and {r[0] for r in track} == {imei}
        assert [r[1] for r in track] == sorted(r[1] for r in track)
        assert len(track) == one(wh, "SELECT count(*) FROM silver.positions WHERE imei = %s AND NOT bad_coordinates",
                                 (imei,))  # two days of history: all of it lies within 72 hours
        recent = one(wh, "SELECT count(*) FROM reporting.fn_vehicle_track(%s, 1)", (plate,))
        assert recent == one(wh, "SELECT count(*) FROM silver.positions WHERE imei = %s AND NOT bad_coordinates "
                                 "AND gps_time >= now() - interval '1 hour'", (imei,))

        trips = rows(wh, "SELECT trip_id, imei, start_lat FROM reporting.fn_trips_for_map(ARRAY[%s])", (typed,))
        assert len(trips) == sum(1 for t in source_trips.values() if t[2] == plate)
        assert {t[1] for t in trips} == {imei} and any(t[2] is not None for t in trips)
        first = one(src, "SELECT min(start_time) FROM tracksolid.trips WHERE imei = %s", (imei,))
        windowed = rows(wh, "SELECT start_time, end_time, city FROM reporting.fn_trips_for_map(NULL, NULL, NULL, %s, "
                            "%s, %s)", (city, first, first + timedelta(hours=6)))
        assert all(r[2] == city and r[1] >= first and r[0] < first + timedelta(hours=6) for r in windowed)


def test_incremental_builds_equal_a_full_recomputation(fleet: Pipeline) -> None:
    build_all(fleet)
    with fleet.src() as src:
        burst(src, minutes=20, seed=5)
        imei = one(src, "SELECT imei FROM tracksolid.trips ORDER BY id LIMIT 1")
        # a late trip and a late fix: device time a day back, recorded now
        src.execute("""INSERT INTO tracksolid.trips (imei, start_time, end_time, distance_m, driving_seconds,
                                                     avg_speed, max_speed)
                       VALUES (%s, now() - interval '26 hours', now() - interval '25 hours', 12345, 1800, 24.7, 61)""",
                    (imei,))
        src.execute("""INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed, source)
                       VALUES (%s, now() - interval '26 hours', -1.28, 36.82, 77, 'track_list')""", (imei,))
    time.sleep(0.15)
    assert all(o.status == "loaded" for o in fleet.run())
    with fleet.wh() as wh:
        before = gold(wh)
    report = build_all(fleet)
    merged = {m.model: m.rows for m in report.models}
    with fleet.wh() as wh, fleet.src() as src:
        after = gold(wh)
        assert after != before
        # only the touched (vehicle, day) rows were recomputed, not the whole table
        assert 0 < merged["gold.daily_fleet_metrics"] < len(after)  # type: ignore[operator]
        assert after == expected_gold(src)
        with wh.transaction():
            set_window(wh, "-infinity", "infinity")
            full = rows(wh, f"SELECT * FROM ({model_sql(fleet, 'silver.positions')}) q ORDER BY imei, gps_time")
        assert full == rows(wh, "SELECT * FROM silver.positions ORDER BY imei, gps_time")
        late_day = one(wh, "SELECT (now() - interval '26 hours') AT TIME ZONE 'Africa/Nairobi'")
        assert after[(imei, late_day.date())][0] >= Decimal("12.345")


def gold(conn: psycopg.Connection[Any]) -> dict[tuple[str, date], tuple[Any, ...]]:
    return {(r[0], r[1]): r[2:] for r in rows(conn, """
        SELECT imei, day, km, driving_seconds, trips, alarms, max_speed_kmh, first_fix, last_fix
        FROM gold.daily_fleet_metrics""")}


def expected_gold(src: psycopg.Connection[Any]) -> dict[tuple[str, date], tuple[Any, ...]]:
    """The daily metrics computed in Python from the source tables (fleet day in East African time)."""
    out: dict[tuple[str, date], list[Any]] = defaultdict(lambda: [Decimal(0), 0, 0, 0, None, None, None])

    def day(ts: datetime) -> date:
        return ts.astimezone(EAT).date()

    for imei, start, metres, seconds in rows(src, "SELECT imei, start_time, distance_m, driving_seconds "
                                                  "FROM tracksolid.trips"):
        agg = out[(imei, day(start))]
        agg[0] += (Decimal(metres) / 1000).quantize(Decimal("0.001"))
        agg[1] += seconds or 0
        agg[2] += 1
    for imei, at in rows(src, "SELECT imei, alarm_time FROM tracksolid.alarms"):
        out[(imei, day(at))][3] += 1
    for imei, gps_time, speed, lat, lng in rows(src, "SELECT DISTINCT ON (imei, gps_time) imei, gps_time, speed, "
                                                     "lat, lng FROM tracksolid.position_history "
                                                     "ORDER BY imei, gps_time, recorded_at DESC, id DESC"):
        agg = out[(imei, day(gps_time))]
        plausible = (speed is None or 0 <= speed <= 250) and -90 <= lat <= 90 and -180 <= lng <= 180
        if speed is not None and plausible:
            agg[4] = speed if agg[4] is None else max(agg[4], speed)
        agg[5] = gps_time if agg[5] is None else min(agg[5], gps_time)
        agg[6] = gps_time if agg[6] is None else max(agg[6], gps_time)
    return {k: (v[0], v[1], v[2], v[3], None if v[4] is None else float(v[4]), v[5], v[6]) for k, v in out.items()}
