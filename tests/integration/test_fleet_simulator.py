"""The fleet simulator against a real PostgreSQL + PostGIS: the properties of the reference fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from bronzeline.errors import SourceError
from bronzeline.fleet.schema import SCHEMA, create_source_schema, grant_readonly, has_geometry
from bronzeline.fleet.simulator import burst, run_forever, seed

NewDatabase = Callable[..., str]
PREFIXES = {"353549", "862798", "865135", "359857"}


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def seeded(new_database: NewDatabase) -> tuple[str, dict[str, int]]:
    dsn = new_database(postgis=True)
    with psycopg.connect(dsn) as conn:
        create_source_schema(conn, postgis=True)
        counts = seed(conn, days=3, devices=150, seed=42)
    return dsn, counts


def test_seed_counts_match_tables(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, counts = seeded
    with psycopg.connect(dsn) as conn:
        for table, count in counts.items():
            assert one(conn, f"SELECT count(*) FROM tracksolid.{table}") == count, table
    assert counts["devices"] == 150
    assert counts["position_history"] > 10_000
    assert all(counts[t] > 0 for t in counts), counts


def test_devices_look_like_the_fleet(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT imei, plate, city, odometer_km FROM tracksolid.devices").fetchall()
    assert all(len(imei) == 15 and imei.isdigit() and imei[:6] in PREFIXES for imei, *_ in rows)
    assert {prefix for prefix in PREFIXES} == {imei[:6] for imei, *_ in rows}
    cities = [city for _, _, city, _ in rows]
    assert set(cities) == {"Nairobi", "Mombasa", "Kampala"}
    assert cities.count("Nairobi") > cities.count("Mombasa") > cities.count("Kampala") >= 3
    assert all(plate[0] in "KU" and plate[3] == " " for _, plate, _, _ in rows)
    assert max(float(odo) for *_, odo in rows) > 200_000


def test_only_a_minority_reports_and_every_imei_is_registered(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        devices = one(conn, "SELECT count(*) FROM tracksolid.devices")
        reporting = one(conn, "SELECT count(DISTINCT imei) FROM tracksolid.position_history")
        assert 0.2 * devices < reporting < 0.5 * devices
        for table in ("position_history", "live_positions", "trips", "alarms", "parking_events", "device_events"):
            orphans = one(
                conn,
                f"""SELECT count(*) FROM tracksolid.{table} t
                    WHERE NOT EXISTS (SELECT 1 FROM tracksolid.devices d WHERE d.imei = t.imei)""",
            )
            assert orphans == 0, table
        cities = conn.execute(
            """SELECT DISTINCT d.city FROM tracksolid.devices d
               JOIN tracksolid.position_history p USING (imei)"""
        ).fetchall()
        assert {c for (c,) in cities} == {"Nairobi", "Mombasa", "Kampala"}


def test_fixes_arrive_late_and_out_of_order(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        late_minute = one(conn, "SELECT count(*) FROM tracksolid.position_history "
                                "WHERE recorded_at - gps_time > interval '1 minute'")
        late_hour = one(conn, "SELECT count(*) FROM tracksolid.position_history "
                              "WHERE recorded_at - gps_time > interval '1 hour'")
        assert late_minute > 1000 and late_hour > 0
        assert one(conn, "SELECT count(*) FROM tracksolid.position_history WHERE gps_time > recorded_at") == 0
        out_of_order = one(
            conn,
            """SELECT count(*) FROM (
                 SELECT gps_time < lag(gps_time) OVER (PARTITION BY imei ORDER BY id) AS back
                 FROM tracksolid.position_history) s WHERE back""",
        )
        assert out_of_order > 0
        sources = conn.execute("SELECT DISTINCT source FROM tracksolid.position_history").fetchall()
        assert {s for (s,) in sources} == {"poll", "track_list"}


def test_recorded_at_spreads_over_the_days(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        for table in ("position_history", "trips", "alarms", "parking_events", "ingestion_log"):
            lo, hi, now = conn.execute(f"SELECT min(recorded_at), max(recorded_at), now() FROM tracksolid.{table}"
                                       ).fetchone() or (None, None, None)
            assert lo is not None and hi is not None and now is not None
            assert (now - lo).total_seconds() > 2 * 86400, table
            assert hi <= now, table
        hours = one(conn, "SELECT count(DISTINCT date_trunc('hour', recorded_at)) FROM tracksolid.position_history")
        assert hours >= 70
        per_day = one(conn, "SELECT count(*) / 3 FROM tracksolid.ingestion_log")
        assert 100 <= per_day <= 1000


def test_trips_are_in_metres(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        median, top, speed = conn.execute(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY distance_m), max(distance_m), avg(avg_speed)
               FROM tracksolid.trips"""
        ).fetchone() or (None, None, None)
        assert median is not None and 500 < median < 50_000
        assert top < 200_000
        assert 10 < float(speed) < 80
        bad = one(conn, "SELECT count(*) FROM tracksolid.trips WHERE end_time <= start_time OR distance_m <= 0")
        assert bad == 0


def test_geometry_has_srid_4326_and_matches_lat_lng(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        for table in ("position_history", "live_positions"):
            assert has_geometry(conn, table)
            wrong = one(
                conn,
                f"""SELECT count(*) FROM tracksolid.{table}
                    WHERE geom IS NULL OR ST_SRID(geom) <> 4326 OR ST_X(geom) <> lng OR ST_Y(geom) <> lat""",
            )
            assert wrong == 0, table
        typmod = one(conn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'tracksolid.position_history'::regclass AND attname = 'geom'")
        assert typmod == "geometry(Point,4326)"


def test_seed_refuses_a_seeded_source_unless_replace(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        with pytest.raises(SourceError, match="already has rows"):
            seed(conn, days=0.2, devices=10)
        conn.rollback()
        counts = seed(conn, days=0.5, devices=20, seed=7, replace=True)
        assert one(conn, "SELECT count(*) FROM tracksolid.devices") == counts["devices"] == 20


def test_burst_adds_rows_stamped_now(seeded: tuple[str, dict[str, int]]) -> None:
    dsn, _ = seeded
    with psycopg.connect(dsn) as conn:
        before = {t: one(conn, f"SELECT coalesce(max(id), 0) FROM tracksolid.{t}")
                  for t in ("position_history", "trips", "alarms", "ingestion_log", "device_events")}
        conn.commit()
        counts = burst(conn, minutes=10, seed=1)
        assert counts["position_history"] > 0 and counts["live_positions"] > 0 and counts["ingestion_log"] > 0
        assert counts["device_events"] > 0
        for table, last in before.items():
            stamps = conn.execute(
                f"""SELECT count(*), count(DISTINCT recorded_at),
                           max(abs(extract(epoch FROM now() - recorded_at)))
                    FROM tracksolid.{table} WHERE id > %s""",
                (last,),
            ).fetchone()
            assert stamps is not None
            if stamps[0]:
                # One transaction: one now(), a moment ago.
                assert stamps[1] == 1 and float(stamps[2]) < 120, table
        late = one(conn, "SELECT count(*) FROM tracksolid.position_history "
                         "WHERE id > %s AND recorded_at - gps_time > interval '1 hour'",
                   (before["position_history"],))
        assert late > 0
        fresh = one(conn, "SELECT count(*) FROM tracksolid.live_positions WHERE updated_at > now() - interval '2 min'")
        assert fresh > 0
        assert one(conn, "SELECT count(*) FROM tracksolid.position_history p WHERE id > %s AND NOT EXISTS "
                         "(SELECT 1 FROM tracksolid.devices d WHERE d.imei = p.imei)",
                   (before["position_history"],)) == 0


def test_without_postgis(new_database: NewDatabase) -> None:
    dsn = new_database(postgis=False)
    with psycopg.connect(dsn) as conn:
        with pytest.raises(SourceError, match="postgis"):
            create_source_schema(conn, postgis=True)
        conn.rollback()
        create_source_schema(conn, postgis=False)
        counts = seed(conn, days=1, devices=40, seed=3)
        assert not has_geometry(conn, "position_history") and not has_geometry(conn, "live_positions")
        assert counts["position_history"] > 1000 and counts["trips"] > 0
        after = burst(conn, minutes=5, seed=2)
        assert after["position_history"] > 0
        grant_readonly(conn, "pg_monitor")
        assert one(conn, "SELECT has_table_privilege('pg_monitor', 'tracksolid.trips', 'SELECT')")


def test_seed_creates_the_schema_when_missing(new_database: NewDatabase) -> None:
    dsn = new_database(postgis=True)
    with psycopg.connect(dsn) as conn:
        counts = seed(conn, days=0.5, devices=30, seed=5)
        assert counts["devices"] == 30
        assert has_geometry(conn, "position_history")
        assert one(conn, "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE %s",
                   (SCHEMA, "%(recorded_at)%")) == 6


def test_run_forever_holds_long_transactions(new_database: NewDatabase) -> None:
    dsn = new_database(postgis=True)
    with psycopg.connect(dsn) as conn:
        seed(conn, days=0.5, devices=40, seed=11)
        last = one(conn, "SELECT max(id) FROM tracksolid.position_history")
    stop = threading.Event()
    counts = run_forever(dsn, 40, long_transaction_every=1, stop_after=5, long_transaction_seconds=2,
                         stop=stop, seed=1)
    assert counts["position_history"] > 50
    assert counts["long_transactions"] >= 1
    with psycopg.connect(dsn) as conn:
        # Rows of a long transaction carry its start, so recorded_at goes back as ids go up.
        backwards = one(
            conn,
            """SELECT count(*) FROM (
                 SELECT recorded_at < max(recorded_at) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING
                                                             AND 1 PRECEDING) AS back
                 FROM tracksolid.position_history WHERE id > %s) s WHERE back""",
            (last,),
        )
        assert backwards > 0
        # The simulator closed its sessions; a backend leaves pg_stat_activity a moment after its client.
        others = 1
        for _ in range(50):
            others = one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()")
            if others == 0:
                break
            time.sleep(0.1)
            conn.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is read once per transaction
        assert others == 0


def _simulator(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bronzeline.fleet.simulator", "--dsn", dsn, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )


def test_cli_is_bounded_by_seconds_and_seeds_with_init(new_database: NewDatabase) -> None:
    dsn = new_database(postgis=False)
    proc = _simulator(dsn, "--init", "--days", "0.3", "--devices", "30", "--rate", "20", "--seconds", "2",
                      "--long-tx-every", "1", "--long-tx-seconds", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "seeded" in out and "stopped; wrote" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_cleanly_on_signals(new_database: NewDatabase, signum: int) -> None:
    dsn = new_database(postgis=True)
    with psycopg.connect(dsn) as conn:
        seed(conn, days=0.3, devices=30, seed=9)
    proc = _simulator(dsn, "--rate", "30", "--long-tx-every", "1", "--long-tx-seconds", "30")
    assert proc.stdout is not None
    assert "simulating" in proc.stdout.readline()
    threading.Event().wait(3)  # long enough for a long transaction to be open
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped; wrote" in out and "Traceback" not in err
    with psycopg.connect(dsn) as conn:
        assert one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND pid <> pg_backend_pid()") == 0
