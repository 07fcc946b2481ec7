#!/usr/bin/env python3
"""bronzeline benchmark: `reconcile` of an unchanged table against reloading it.

On a local PostgreSQL (superuser DSN), in one run:
  * generates an N-row fleet `position_history` (as bench/run.py does) and loads it with `bronzeline run`
    (the first, full load into an empty bronze table);
  * `bronzeline reseed position_history`: the full reload of the same table (every row read, written to a
    batch file and merged; all already present);
  * `bronzeline reconcile position_history` on the unchanged table (every row hashed on both sides);
  * the same after deleting 100 scattered rows and updating 100 at the source (ranges bisected to keys),
    then `--repair`.
Each command is a whole process (start-up included); the wall time and peak RSS are printed.

    python bench/reconcile.py --dsn "host=127.0.0.1 port=54334 user=postgres password=… dbname=postgres" --rows 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import POSITION_DDL, POSITION_TABLE, config, dsn_for, fill, recreate, timed

SRC_DB, WH_DB = "bench_reconcile_source", "bench_reconcile_warehouse"


def bronzeline(tmp: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    return timed([sys.executable, "-m", "bronzeline.cli", "-c", str(tmp / "bronzeline.yml"), *args], env, cwd=tmp)


def reconcile(tmp: Path, env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    """(wall seconds, the table's JSON report); exit 1 (differences) is expected here."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bronzeline.cli", "-c", str(tmp / "bronzeline.yml"), "reconcile",
                           "position_history", "--json", *args], env=env, cwd=tmp, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not proc.stdout:
        raise SystemExit(f"reconcile failed ({proc.returncode}): {proc.stderr[-2000:]}")
    [table] = json.loads(proc.stdout)["tables"]
    return wall, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BRONZELINE_BENCH_DSN") or os.environ.get("BRONZELINE_TEST_PG"),
                        help="superuser DSN of a local PostgreSQL with PostGIS available")
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("pass --dsn (or set BRONZELINE_BENCH_DSN)")
    src, wh = dsn_for(args.dsn, SRC_DB), dsn_for(args.dsn, WH_DB)
    print(f"generating {args.rows:,} rows of position_history …", flush=True)
    recreate(args.dsn, SRC_DB)
    recreate(args.dsn, WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(POSITION_DDL)
    fill(src, 1, args.rows)
    env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh}
    figures: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bronzeline-bench-") as tmpdir:
        tmp = Path(tmpdir)
        config(tmp, POSITION_TABLE)
        bronzeline(tmp, env, "migrate")
        time.sleep(0.2)
        wall, rss = bronzeline(tmp, env, "run")
        figures.append(("first full load (run, empty bronze)", wall, rss, ""))
        with psycopg.connect(wh, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE bronze.position_history")
        wall, rss = bronzeline(tmp, env, "reseed", "position_history")
        figures.append(("full reload (reseed, all rows present)", wall, rss, ""))
        wall, found = reconcile(tmp, env)
        figures.append(("reconcile, unchanged", wall, 0.0,
                        f"{found['ranges']} ranges, {found['differences']} differences"))
        with psycopg.connect(src, autocommit=True) as conn:
            step = max(1, args.rows // 100)
            conn.execute("DELETE FROM tracksolid.position_history WHERE id %% %s = 7", (step,))
            conn.execute("UPDATE tracksolid.position_history SET speed = -1 WHERE id %% %s = 11", (step,))
        wall, found = reconcile(tmp, env)
        figures.append(("reconcile, 100 deleted + 100 updated", wall, 0.0,
                        f"{found['ranges']} ranges, {found['differences']} differences"))
        wall, found = reconcile(tmp, env, "--repair")
        repaired = found["repair"] or {}
        figures.append(("reconcile --repair", wall, 0.0, f"{repaired.get('rows_loaded')} loaded, "
                        f"{repaired.get('rows_deleted')} deleted"))
    print(f"\n{args.rows:,} rows, one machine (source and warehouse on the same server):")
    for name, seconds, rss, note in figures:
        memory = f"  {rss:5.0f} MB RSS" if rss else ""
        print(f"  {name:<42} {seconds:8.2f} s{memory}  {note}")
    unchanged = next(s for n, s, _, _ in figures if n == "reconcile, unchanged")
    reload = next(s for n, s, _, _ in figures if n.startswith("full reload"))
    print(f"reconcile of the unchanged table takes {unchanged / reload:.0%} of a full reload's time")


if __name__ == "__main__":
    main()
