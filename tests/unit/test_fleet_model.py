"""The fleet simulator's pieces without a database: registry, motion, delivery model, config."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bronzeline.config.loader import load_config
from bronzeline.fleet import history, reference_config_text, write_demo_config
from bronzeline.fleet.model import CITIES, ewkb_point, haversine_m, luhn_digit, make_fleet
from bronzeline.fleet.motion import Vehicle

NOW = 1_780_000_000.0


def test_imei_check_digit_and_ewkb() -> None:
    assert luhn_digit("49015420323751") == "8"  # a published example IMEI: 490154203237518
    assert ewkb_point(1.0, 2.0).upper() == "0101000020E6100000000000000000F03F0000000000000040"


def test_fleet_shape_is_deterministic() -> None:
    first = make_fleet(random.Random(42), 150, datetime.fromtimestamp(NOW, UTC), 0.35)
    second = make_fleet(random.Random(42), 150, datetime.fromtimestamp(NOW, UTC), 0.35)
    assert [d.imei for d in first] == [d.imei for d in second]
    assert len({d.imei for d in first}) == 150
    assert all(luhn_digit(d.imei[:14]) == d.imei[14] for d in first)
    active = [d for d in first if d.active]
    assert 0.3 * 150 <= len(active) <= 0.4 * 150
    assert {d.city.name for d in active} == {c.name for c in CITIES}
    assert all(d.sim_active for d in active)


def test_vehicles_drive_plausible_trips() -> None:
    rng = random.Random(5)
    trips = []
    for _ in range(10):
        vehicle = Vehicle(rng, CITIES[0], (CITIES[0].lat, CITIES[0].lng), NOW - 2 * 86400)
        act = vehicle.advance(NOW - 86400)
        act.extend(vehicle.advance(NOW))  # carries on where it stopped
        times = [f.t for f in act.fixes]
        assert times == sorted(times) and len(set(times)) == len(times)
        trips += act.trips
        assert all(haversine_m(f.lat, f.lng, CITIES[0].lat, CITIES[0].lng) < 40_000 for f in act.fixes)
    distances = [t.distance_m for t in trips]
    assert len(trips) > 20
    assert 500 < statistics.median(distances) < 30_000
    assert all(t.end > t.start and 3 < t.avg_kmh < 90 for t in trips)


def test_history_is_late_never_early_and_inside_the_window() -> None:
    rng = random.Random(1)
    fleet = make_fleet(rng, 60, datetime.fromtimestamp(NOW, UTC), 0.35)
    begin, end = NOW - 86400, NOW
    rows = history.build(rng, fleet, begin, end, geom=True)
    positions = rows["position_history"]
    assert positions and all(len(r) == 10 for r in positions)
    assert all(begin < r[2].timestamp() <= end and r[1] <= r[2] for r in positions)
    assert any((r[2] - r[1]).total_seconds() > 60 for r in positions)
    stamps = [r[2] for r in positions]
    assert stamps == sorted(stamps)
    imeis = {d.imei for d in fleet}
    assert {r[0] for r in positions} <= imeis
    again = history.build(random.Random(1), make_fleet(random.Random(1), 60, datetime.fromtimestamp(NOW, UTC),
                                                       0.35), begin, end, geom=True)
    assert again["position_history"] != [] and len(again["trips"]) > 0


def test_reference_config_loads(tmp_path: Path) -> None:
    env = {"SOURCE_DSN": "host=127.0.0.1 dbname=fleet", "WAREHOUSE_DSN": "host=127.0.0.1 dbname=dwh"}
    for postgis in (True, False):
        path = tmp_path / f"ref{postgis}.yml"
        path.write_text(reference_config_text(postgis), encoding="utf-8")
        config = load_config(path, env=env)
        assert config.project == "fleet" and config.timezone == "Africa/Nairobi"
        assert [t.name for t in config.tables if t.mode == "snapshot"] == ["devices", "live_positions"]
        assert config.table("position_history").geometry == (["geom"] if postgis else [])
        trips = config.table("trips")
        assert trips.query is not None and "AS distance_km" in trips.query and trips.watermark == "recorded_at"
        assert all(t.key == ["id"] for t in config.tables if t.mode == "incremental")
        assert config.schedule.cron == "0 5,8,11,14,17,20,23 * * *"
    assert "${SOURCE_DSN}" in reference_config_text(True)


API_ENV = {"JIMI_APP_KEY": "k", "JIMI_APP_SECRET": "s", "JIMI_USER_ID": "fireside", "JIMI_PASSWORD_MD5": "0" * 32,
           "PUSH_TOKEN": "t", "WAREHOUSE_DSN": "host=127.0.0.1 dbname=dwh"}
DATABASE_TABLES = {"devices", "live_positions", "position_history", "trips", "alarms", "parking_events",
                   "device_events", "ingestion_log"}


def test_the_demos_configs_keep_only_their_own_block(tmp_path: Path) -> None:
    # The plain demo's copy needs no JIMI_/PUSH_ variable (an empty environment loads it) and has no API
    # connection or table; the API demo's has no database source, tables or models, and credentials only
    # as ${VAR}s, not written into the file.
    plain = load_config(write_demo_config(tmp_path / "db", "host=127.0.0.1 dbname=fleet", "host=127.0.0.1 dbname=dwh",
                                          postgis=True), env={})
    assert {getattr(c, "type", "postgres") for c in plain.connections.values()} == {"postgres"}
    assert {t.name for t in plain.tables} == DATABASE_TABLES and not any(t.is_api for t in plain.tables)
    assert plain.models is not None
    path = write_demo_config(tmp_path / "api", None, None, postgis=True, api=True)
    text = path.read_text()
    assert "JIMI" not in (tmp_path / "db" / "bronzeline.yml").read_text()
    assert "SOURCE_DSN" not in text and "# ---- " not in text and "${JIMI_APP_SECRET}" in text
    api = load_config(path, env=API_ENV)
    assert set(api.connections) == {"warehouse", "jimi", "pushes"}
    assert not {t.name for t in api.tables} & DATABASE_TABLES and all(t.is_api for t in api.tables)
    assert api.models is None and not (tmp_path / "api" / "models").exists()
    endpoints = {t.name: t.endpoint for t in api.tables}
    assert endpoints == {"api_devices": "devices", "api_live_positions": "live_positions", "api_track": "track",
                         "api_alarms": "alarms", "api_trips": "trips", "api_parking": "parking",
                         "push_gps": "pushgps", "push_alarms": "pushalarm", "push_events": "pushevent",
                         "push_lbs": "pushlbs", "push_obd": "pushobd", "push_trip_reports": "pushtripreport",
                         "push_fuel": "pushoil", "push_temperature": "pushtem"}
    track = api.table("api_track")
    assert (track.lookback, track.settle, track.watermark) == ("2 hours", "2 minutes", "gps_time")
    # trips and stops are served once they have ended, under their start: the lookback outlasts one
    trips, parking = api.table("api_trips").lookback_interval, api.table("api_parking").lookback_interval
    assert trips is not None and trips.total_seconds() >= 3600
    assert parking is not None and parking.total_seconds() >= 12 * 3600
    jimi = api.connections["jimi"]
    assert getattr(jimi, "url", None) == "https://eu-open.tracksolidpro.com/route/rest"  # ${JIMI_URL:-…}


def test_the_whole_reference_file_is_a_config_too(tmp_path: Path) -> None:
    from bronzeline.fleet.config_text import reference_file_text

    path = tmp_path / "bronzeline.yml"
    path.write_text(reference_file_text(), encoding="utf-8")
    config = load_config(path, env={**API_ENV, "SOURCE_DSN": "host=127.0.0.1 dbname=fleet"})
    names = [t.name for t in config.tables]
    assert len(names) == len(set(names)) == len(DATABASE_TABLES) + 14


def test_demo_config_has_literal_loopback_dsns_only(tmp_path: Path) -> None:
    source = "host=127.0.0.1 port=5544 user=postgres dbname=fleet"
    path = write_demo_config(tmp_path / "demo", source, "host=127.0.0.1 port=5544 dbname=dwh", postgis=False)
    config = load_config(path, env={})
    assert config.connections["source"].dsn == source
    assert config.base_dir == (tmp_path / "demo").resolve()
    with pytest.raises(ValueError, match="password"):
        write_demo_config(tmp_path / "x", "host=127.0.0.1 password=secret", source, postgis=False)
    with pytest.raises(ValueError, match="loopback"):
        write_demo_config(tmp_path / "x", "host=db.example.com", source, postgis=False)


def test_reference_config_builds_the_shipped_models(tmp_path: Path) -> None:
    from bronzeline.fleet import shipped_models_dir

    shipped = shipped_models_dir()
    names = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*.sql"))
    assert names == ["gold/daily_fleet_metrics.sql", "reporting/fn_live_positions.sql",
                     "reporting/fn_trips_for_map.sql", "reporting/fn_vehicle_track.sql",
                     "reporting/normalize_plate.sql", "reporting/v_trips.sql", "silver/positions.sql",
                     "silver/trips.sql", "silver/vehicles.sql"]
    path = write_demo_config(tmp_path / "demo", "host=127.0.0.1 dbname=fleet", "host=127.0.0.1 dbname=dwh",
                             postgis=False)
    config = load_config(path, env={})
    assert config.models is not None and config.models.schedule_build
    assert config.models_dir == (tmp_path / "demo" / "models").resolve()
    copied = sorted(str(p.relative_to(config.models_dir)) for p in config.models_dir.rglob("*.sql"))
    assert copied == names
    from bronzeline.models.graph import build_order
    from bronzeline.models.project import load_project

    project = load_project(config)
    order = build_order(project, config)
    assert set(order) >= {n.removesuffix(".sql").replace("/", ".") for n in names}
    before = order.index
    assert before("silver.trips") < before("gold.daily_fleet_metrics") > before("silver.positions")
    assert before("reporting.v_trips") < before("reporting.fn_trips_for_map")
    assert before("reporting.normalize_plate") < before("reporting.fn_vehicle_track")
    gold = project.models["gold.daily_fleet_metrics"]
    assert (gold.materialized, gold.key, gold.watermark) == ("incremental", ("imei", "day"), "recorded_at")
    assert {c.name for c in gold.checks} >= {"row_count", "not_null(km)"}
    assert {c.name for c in project.sources["bronze.trips"].checks} >= {"relationships(imei)"}
