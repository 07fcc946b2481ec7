"""bronzeline models benchmark: `build` over a fleet-shaped bronze table, against the same SQL run by
hand with psql.

On a local PostgreSQL (superuser DSN), in one run:
  * loads N rows of `position_history` into bronze with `bronzeline run` (the generator of bench/run.py);
  * the first `bronzeline build` (whole process) of four models — an incremental row-level silver
    table, an incremental daily aggregate, a summary table and a matview on the aggregate — against
    the same statements (CREATE TABLE AS, primary keys, the matview and its unique index) run by psql;
  * an incremental build after `bronzeline run` loads 10,000 new rows (whole process);
  * the cost of the checks: a build with its checks minus the same build without them, per check,
    next to the time of one `count(*)` scan of the checked table.

    python bench/models.py --dsn "host=127.0.0.1 port=54329 user=postgres password=… dbname=postgres" --rows 5000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import FILL, POSITION_DDL, POSITION_TABLE, SRC_DB, WH_DB, config, dsn_for, recreate

MODELS = {
    "silver/positions.sql": """
SELECT id, imei, gps_time, recorded_at, lat, lng, speed,
       (speed < 0 OR speed > 250) AS impossible_speed,
       (lat NOT BETWEEN -90 AND 90 OR lng NOT BETWEEN -180 AND 180) AS impossible_position
FROM bronze.position_history
""",
    "gold/daily_imei.sql": """
WITH touched AS MATERIALIZED (
    SELECT DISTINCT imei, (gps_time AT TIME ZONE 'Africa/Nairobi')::date AS day FROM bronze.position_history
    WHERE recorded_at > (SELECT current_setting('bronzeline.window_start')::timestamptz)
      AND recorded_at <= (SELECT current_setting('bronzeline.window_end')::timestamptz))
SELECT p.imei, t.day, count(*) AS fixes, max(p.speed) AS max_speed, min(p.gps_time) AS first_fix,
       max(p.gps_time) AS last_fix, max(p.recorded_at) AS recorded_at
FROM bronze.position_history p
JOIN touched t ON t.imei = p.imei AND t.day = (p.gps_time AT TIME ZONE 'Africa/Nairobi')::date
WHERE p.recorded_at <= (SELECT current_setting('bronzeline.window_end')::timestamptz)
  -- a fix is recorded after it is taken: the touched days' rows lie above their first midnight
  AND p.recorded_at >= (SELECT min(day) FROM touched)::timestamp AT TIME ZONE 'Africa/Nairobi'
GROUP BY p.imei, t.day
""",
    "gold/imei_summary.sql": """
SELECT imei, sum(fixes) AS fixes, max(max_speed) AS max_speed, max(last_fix) AS last_fix
FROM gold.daily_imei GROUP BY imei
""",
    "reporting/v_daily.sql": "SELECT imei, day, fixes, max_speed FROM gold.daily_imei\n",
}
PROPERTIES = """
models:
  - name: silver.positions
    materialized: incremental
    key: [id]
    incremental: {watermark: recorded_at}
  - name: gold.daily_imei
    materialized: incremental
    key: [imei, day]
    incremental: {watermark: recorded_at}
  - name: gold.imei_summary
    materialized: table
    key: [imei]
  - name: reporting.v_daily
    materialized: matview
    key: [imei, day]
"""
CHECKS = """
    data_tests:
      - row_count: {min: 1}
    columns:
      - name: speed
        data_tests:
          - not_null
          - accepted_range: {min_value: 0, max_value: 250}
"""
CHECK_COUNT = 3
# The same work by hand: what `build` runs on a first build, as one psql script.
BY_HAND = """
\\set ON_ERROR_STOP on
BEGIN;
CREATE SCHEMA hand;
CREATE TABLE hand.positions AS SELECT * FROM ({silver}) q WHERE q.recorded_at <= now();
ALTER TABLE hand.positions ADD PRIMARY KEY (id);
SELECT set_config('bronzeline.window_start', '-infinity', true), set_config('bronzeline.window_end', now()::text, true);
CREATE TABLE hand.daily_imei AS {daily};
ALTER TABLE hand.daily_imei ADD PRIMARY KEY (imei, day);
CREATE TABLE hand.imei_summary AS {summary};
ALTER TABLE hand.imei_summary ADD PRIMARY KEY (imei);
CREATE MATERIALIZED VIEW hand.v_daily AS SELECT imei, day, fixes, max_speed FROM hand.daily_imei WITH DATA;
CREATE UNIQUE INDEX ON hand.v_daily (imei, day);
COMMIT;
"""


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return took


def write_models(tmp: Path, checks: bool) -> None:
    root = tmp / "models"
    for name, text in MODELS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    props = PROPERTIES.replace("    incremental: {watermark: recorded_at}\n  - name: gold.daily_imei",
                               "    incremental: {watermark: recorded_at}\n" + CHECKS.strip("\n") +
                               "\n  - name: gold.daily_imei", 1) if checks else PROPERTIES
    (root / "properties.yml").write_text(props)


def reset_models(wh: str) -> None:
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS silver CASCADE; DROP SCHEMA IF EXISTS gold CASCADE; "
                     "DROP SCHEMA IF EXISTS reporting CASCADE; DROP SCHEMA IF EXISTS hand CASCADE")
        conn.execute("TRUNCATE dwh_control.model_runs, dwh_control.check_results, dwh_control.model_watermarks")


def scan_seconds(wh: str, relation: str, repeat: int) -> float:
    with psycopg.connect(wh, autocommit=True) as conn:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(f"SELECT count(*) FROM {relation}")
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="superuser DSN of a local PostgreSQL with PostGIS available")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--increment", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    src, wh = dsn_for(args.dsn, SRC_DB), dsn_for(args.dsn, WH_DB)
    recreate(args.dsn, SRC_DB)
    recreate(args.dsn, WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(POSITION_DDL)
    print(f"loading {args.rows:,} rows of position_history into bronze …", flush=True)
    fill_rows(src, 1, args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="bronzeline-bench-models-"))
    path = config(tmp, POSITION_TABLE)
    path.write_text(path.read_text() + "models: {path: models}\n")
    env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh}
    cli = [sys.executable, "-m", "bronzeline.cli", "-c", str(path)]
    write_models(tmp, checks=False)
    timed([*cli, "migrate"], env, tmp)
    time.sleep(0.2)
    timed([*cli, "run"], env, tmp)
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE bronze.position_history")

    script = BY_HAND.format(silver=MODELS["silver/positions.sql"].strip(),
                            daily=MODELS["gold/daily_imei.sql"].strip(),
                            summary=MODELS["gold/imei_summary.sql"].strip().replace("gold.", "hand."))
    (tmp / "by_hand.sql").write_text(script)
    psql = ["psql", "-q", "-X", "-d", wh, "-f", str(tmp / "by_hand.sql")]
    reset_models(wh)
    timed(psql, env, tmp)  # warm-up, untimed: both sides then read bronze from a warm cache
    first, by_hand, with_checks = [], [], []
    for i in range(args.repeat):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate which side goes first
            reset_models(wh)
            if side == 0:
                first.append(timed([*cli, "build"], env, tmp))
            else:
                by_hand.append(timed(psql, env, tmp))
    write_models(tmp, checks=True)
    for _ in range(args.repeat):
        reset_models(wh)
        with_checks.append(timed([*cli, "build"], env, tmp))

    incremental = []
    next_id = args.rows + 1
    for _ in range(args.repeat):
        fill_rows(src, next_id, next_id + args.increment - 1)
        next_id += args.increment
        time.sleep(0.2)
        timed([*cli, "run"], env, tmp)
        incremental.append(timed([*cli, "build"], env, tmp))
    scan = scan_seconds(wh, "silver.positions", args.repeat)
    tested = [timed([*cli, "test", "silver.positions"], env, tmp) for _ in range(args.repeat)]
    write_models(tmp, checks=False)
    untested = [timed([*cli, "test", "silver.positions"], env, tmp) for _ in range(args.repeat)]

    med = statistics.median
    print(f"\nmodels over {args.rows:,} bronze rows (median of {args.repeat}; whole processes)")
    print(f"  first build, 4 models (bronzeline build):   {med(first):7.2f} s")
    print(f"  the same statements by hand (psql):         {med(by_hand):7.2f} s   ratio psql/bronzeline = "
          f"{med(by_hand) / med(first):.2f}")
    print(f"  first build with {CHECK_COUNT} checks on silver.positions:  {med(with_checks):7.2f} s")
    per_check = (med(tested) - med(untested)) / CHECK_COUNT
    print(f"  per check (`test`, with minus without):  {per_check:7.2f} s; one count(*) scan of silver.positions: "
          f"{scan:.2f} s")
    print(f"  incremental build after {args.increment:,} new rows:  {med(incremental):7.2f} s "
          f"(min {min(incremental):.2f} s; includes the {CHECK_COUNT} checks)")


def fill_rows(src: str, first: int, last: int) -> None:
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(FILL, {"start": "2026-11-01T00:00:00+03", "first": first, "last": last, "step": "250 ms"})
        conn.execute("ANALYZE tracksolid.position_history")


if __name__ == "__main__":
    main()
