"""The core pipeline end to end: migrate, run, parity, files, accounting, status."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.integration.pipeline import Pipeline, table_digest

POSITIONS = """
CREATE TABLE tracksolid.position_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    gps_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    lat double precision, lng double precision,
    speed numeric(5,2), heading smallint, ignition boolean,
    source text,
    geom geometry(Point, 4326));
CREATE INDEX ON tracksolid.position_history (recorded_at);
CREATE TABLE tracksolid.devices (
    imei varchar(15) PRIMARY KEY, plate text, driver_name text, fuel_per_100km numeric(5,2),
    updated_at timestamptz NOT NULL DEFAULT now());
"""

TABLES = """\
  - name: position_history
    from: tracksolid.position_history
    mode: incremental
    watermark: recorded_at
    key: [id]
    geometry: [geom]
  - name: devices
    from: tracksolid.devices
    mode: snapshot
    key: [imei]
"""


def insert_positions(conn: Any, n: int, start: int = 0) -> None:
    conn.execute(
        """INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed, heading, ignition, source, geom)
           SELECT '35354900000' || lpad((g %% 80)::text, 4, '0'), now() - (g || ' seconds')::interval,
                  -1.28 + g * 1e-6, 36.82 + g * 1e-6, (g %% 120) + 0.25, (g %% 360)::smallint, g %% 2 = 0,
                  CASE WHEN g %% 5 = 0 THEN 'track_list' ELSE 'poll' END,
                  ST_SetSRID(ST_MakePoint(36.82 + g * 1e-6, -1.28 + g * 1e-6), 4326)
           FROM generate_series(%s::int, %s::int) g""", (start + 1, start + n))


def setup(pipeline: Pipeline, rows: int = 500) -> None:
    with pipeline.src() as conn:
        conn.execute(POSITIONS)
        insert_positions(conn, rows)
        conn.execute("INSERT INTO tracksolid.devices (imei, plate, driver_name, fuel_per_100km) "
                     "SELECT '35354900000' || lpad(g::text, 4, '0'), 'KDK ' || g || 'A', NULL, 9.5 "
                     "FROM generate_series(0, 79) g")
    pipeline.write_config(TABLES)
    time.sleep(0.15)  # the bound is held 100 ms below the source clock


def assert_parity(pipeline: Pipeline) -> None:
    with pipeline.src() as s, pipeline.wh() as w:
        assert table_digest(s, "tracksolid.position_history") == table_digest(w, "bronze.position_history")
        assert table_digest(s, "tracksolid.devices") == table_digest(w, "bronze.devices")


def inserts_updates_deletes_reach_bronze(pipeline: Pipeline) -> str:
    """The second round of the core scenario: new rows, a snapshot update and a delete; the run's output."""
    with pipeline.src() as conn:
        insert_positions(conn, 300, start=500)
        conn.execute("UPDATE tracksolid.devices SET plate = 'KDK 999Z' WHERE imei = '353549000000001'")
        conn.execute("DELETE FROM tracksolid.devices WHERE imei = '353549000000002'")
    time.sleep(0.15)
    out = pipeline.cli("run", check=True).stdout
    assert "position_history: loaded 300 of 300 rows" in out
    assert "devices: loaded 1 of 79 rows (78 already present, 1 deleted)" in out
    assert_parity(pipeline)
    return out


def test_migrate_run_parity_and_files(pipeline: Pipeline) -> None:
    setup(pipeline)
    migrate = pipeline.cli("migrate", check=True)
    assert "created bronze.position_history" in migrate.stdout
    again = pipeline.cli("migrate", check=True)  # idempotent
    assert "created" not in again.stdout

    pipeline.cli("run", check=True)
    assert_parity(pipeline)
    processed = pipeline.files("processed", "position_history")
    assert len(processed) == 2 and processed[0].endswith(".csv.gz") and "_EAT_" in processed[0]
    assert processed[1].endswith(".manifest.json")
    assert pipeline.files("exports", "position_history") == []
    manifest = json.loads((pipeline.blob / "processed" / "position_history" / processed[1]).read_text())
    assert manifest["rows"] == 500 and manifest["window_start"] is None and len(manifest["sha256"]) == 64
    assert {"name": "geom", "type": "geometry(Point,4326)"} in manifest["columns"]

    inserts_updates_deletes_reach_bronze(pipeline)

    with pipeline.wh() as conn:
        runs = conn.execute("SELECT table_name, status, rows_extracted, rows_loaded, rows_skipped, window_start, "
                            "window_end FROM dwh_control.extract_runs ORDER BY run_id").fetchall()
        assert [r[1] for r in runs] == ["loaded"] * 4
        assert all(r[2] == r[3] + r[4] for r in runs)
        ph = [r for r in runs if r[0] == "position_history"]
        assert ph[0][5] is None and ph[1][5] == ph[0][6]  # windows are contiguous
        devices = [r for r in runs if r[0] == "devices"]
        assert devices[0][5] is None and devices[0][6] is None  # snapshots have no window
        wm = conn.execute("SELECT table_name, last_extracted_at FROM dwh_control.extract_watermarks").fetchall()
        assert [w[0] for w in wm] == ["position_history"] and wm[0][1] == ph[1][6]
        # the types came from the source, typmods included, and the key is the primary key
        types = dict(conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'bronze.devices'::regclass AND a.attnum > 0").fetchall())
        assert types["imei"] == "character varying(15)" and types["fuel_per_100km"] == "numeric(5,2)"

    status = json.loads(pipeline.cli("status", "--json", check=True).stdout)
    by_table = {t["table"]: t for t in status["tables"]}
    ph_status = by_table["position_history"]
    assert ph_status["rows_loaded_last_run"] == 300 and ph_status["pending_files"] == 0
    assert ph_status["failures_24h"] == 0 and isinstance(ph_status["lag_seconds"], float)
    assert "+00:00" in ph_status["watermark"] and ph_status["last_loaded_at"]
    assert by_table["devices"]["mode"] == "snapshot"
    table = pipeline.cli("status", check=True).stdout
    assert "position_history" in table and "devices" in table


def test_rerun_and_replay_change_nothing(pipeline: Pipeline) -> None:
    setup(pipeline)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        before = table_digest(conn, "bronze.position_history")

    # re-run every window: move the watermark to the beginning of time
    pipeline.cli("backfill", "position_history", "--since", "2000-01-01T00:00:00", check=True)
    out = pipeline.cli("run", "position_history", check=True).stdout
    assert "loaded 0 of 500 rows (500 already present)" in out

    # replay a processed batch file: put it back into exports/
    processed = pipeline.blob / "processed" / "position_history"
    exports = pipeline.blob / "exports" / "position_history"
    first = sorted(processed.iterdir())[:2]
    for path in first:
        (exports / path.name).write_bytes(path.read_bytes())
    with pipeline.wh() as conn:
        run_id = int(first[0].name.split("_")[-1].split(".")[0])
        conn.execute("UPDATE dwh_control.extract_runs SET status = 'uploaded' WHERE run_id = %s", (run_id,))
    out = pipeline.cli("run", "position_history", check=True).stdout
    assert "loaded 0 of 500 rows (500 already present)" in out
    with pipeline.wh() as conn:
        assert table_digest(conn, "bronze.position_history") == before
        bad = conn.execute("SELECT count(*) FROM dwh_control.extract_runs "
                           "WHERE status = 'loaded' AND rows_extracted <> rows_loaded + rows_skipped").fetchone()
        assert bad == (0,)


def test_backfill_until_runs_one_window_and_keeps_watermark(pipeline: Pipeline) -> None:
    setup(pipeline)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        mark = conn.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks").fetchone()
        conn.execute("DELETE FROM bronze.position_history WHERE id > 400")
    out = pipeline.cli("backfill", "position_history", "--since", "2000-01-01", "--until", "2100-01-01",
                       check=True).stdout
    assert "loaded 100 of 500 rows (400 already present)" in out
    assert_parity(pipeline)
    with pipeline.wh() as conn:
        assert conn.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks").fetchone() == mark


def test_reseed_reloads_history(pipeline: Pipeline) -> None:
    setup(pipeline)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        conn.execute("DELETE FROM bronze.position_history WHERE id % 2 = 0")
    out = pipeline.cli("reseed", "position_history", check=True).stdout
    assert "loaded 250 of 500 rows (250 already present)" in out
    assert_parity(pipeline)


def test_on_conflict_update_never_puts_back_old_values(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.trips (id int PRIMARY KEY, distance_m int, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.trips (id, distance_m) SELECT g, g * 100 FROM generate_series(1, 10) g")
    pipeline.write_config("""\
  - name: trips
    query: "SELECT id, round(distance_m / 1000.0, 3)::numeric(10,3) AS distance_km, recorded_at FROM tracksolid.trips"
    watermark: recorded_at
    key: [id]
    on_conflict: update
""")
    time.sleep(0.15)
    pipeline.cli("migrate", check=True)
    pipeline.cli("run", check=True)
    with pipeline.src() as conn:
        conn.execute("UPDATE tracksolid.trips SET distance_m = 99999, recorded_at = now() WHERE id = 3")
    time.sleep(0.15)
    out = pipeline.cli("run", check=True).stdout
    assert "loaded 1 of 1 rows" in out
    with pipeline.wh() as conn:
        assert conn.execute("SELECT distance_km::text FROM bronze.trips WHERE id = 3").fetchone() == ("99.999",)
        typ = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'bronze.trips'::regclass AND attname = 'distance_km'").fetchone()
        assert typ == ("numeric(10,3)",)
    # replay the first (older) batch: the newer value stays
    processed = pipeline.blob / "processed" / "trips"
    first = sorted(processed.iterdir(), key=lambda p: int(p.name.split("_")[-1].split(".")[0]))[:2]
    for path in first:
        (pipeline.blob / "exports" / "trips" / path.name).write_bytes(path.read_bytes())
    with pipeline.wh() as conn:
        conn.execute("UPDATE dwh_control.extract_runs SET status = 'uploaded' WHERE run_id = 1")
    pipeline.cli("run", check=True)
    with pipeline.wh() as conn:
        assert conn.execute("SELECT distance_km::text FROM bronze.trips WHERE id = 3").fetchone() == ("99.999",)


def test_workers_run_tables_at_once_with_the_same_result(pipeline: Pipeline) -> None:
    setup(pipeline)
    extra = "".join(f"  - name: copy_{i}\n    from: tracksolid.position_history\n    watermark: recorded_at\n"
                    f"    key: [id]\n" for i in range(4))
    pipeline.write_config(TABLES + extra)
    pipeline.cli("migrate", check=True)
    proc = pipeline.cli("run", "--workers", "3", check=True)
    assert proc.stdout.count("loaded 500 of 500 rows") == 5 and "devices: loaded 80" in proc.stdout
    # outcomes print in config order whatever order the workers finished in
    order = [line.split(":")[0] for line in proc.stdout.splitlines() if ": loaded" in line]
    assert order == ["position_history", "devices", "copy_0", "copy_1", "copy_2", "copy_3"]
    with pipeline.wh() as conn:
        for name in ("position_history", "copy_0", "copy_3"):
            assert table_digest(conn, f"bronze.{name}") == table_digest(conn, "bronze.position_history")
