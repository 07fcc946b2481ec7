"""bronzeline under Dagster: what an asset costs on top of the run itself, and a 200-table config planned
and run in process.

On a local PostgreSQL (superuser DSN), in one run:
  * N small tables (default 200; `--rows` new rows each per round) in a source database, migrated;
  * `bronzeline plan` of the config, and Dagster `Definitions` built from it (what a code location pays
    at load time);
  * a round of `pipeline.run_tables` over every table (one process, one Context: the CLI's `run`), then
    a round of Dagster `materialize` of every table asset in process (each asset its own step and its
    own connections), then `run_tables` again; each round loads the same number of new rows;
  * and a round of one `run_tables` call per table (what each asset does, without Dagster);
  * the difference per table is Dagster's per-asset overhead (step orchestration, event log) plus the
    integration's (its own connections and migrations check per asset).

    python bench/dagster.py --dsn "host=127.0.0.1 port=54329 user=postgres password=… dbname=postgres" --tables 200
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

# This file is named dagster.py: its folder must not shadow the real `dagster` package on the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
_run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = _run  # its dataclasses look their module up
_spec.loader.exec_module(_run)
dsn_for, recreate = _run.dsn_for, _run.recreate

SRC_DB, WH_DB = "bench_dagster_source", "bench_dagster_warehouse"


def setup(admin: str, tmp: Path, tables: int) -> dict[str, str]:
    for db in (SRC_DB, WH_DB):
        recreate(admin, db)
    src, wh = dsn_for(admin, SRC_DB), dsn_for(admin, WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tracksolid")
        for i in range(tables):
            conn.execute(f"CREATE TABLE tracksolid.t{i} (id int PRIMARY KEY, v text, "
                         "recorded_at timestamptz NOT NULL DEFAULT now())")
    lines = "".join(f"  - {{name: t{i}, from: tracksolid.t{i}, watermark: recorded_at, key: [id]}}\n"
                    for i in range(tables))
    (tmp / "bronzeline.yml").write_text(
        "project: bench\ntimezone: Africa/Nairobi\nconnections:\n  source: {dsn: \"${SOURCE_DSN}\"}\n"
        "  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\nblob: {url: \"file://./blob\"}\n"
        "schedule: {cron: \"0 * * * *\"}\nretries: {attempts: 1}\ntables:\n" + lines)
    env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh}
    subprocess.run([sys.executable, "-m", "bronzeline.cli", "-c", str(tmp / "bronzeline.yml"), "migrate"],
                   env=env, cwd=tmp, check=True, capture_output=True)
    return env


def add_rows(src: str, tables: int, first: int, rows: int) -> None:
    with psycopg.connect(src, autocommit=True) as conn:
        for i in range(tables):
            conn.execute(f"INSERT INTO tracksolid.t{i} (id, v) SELECT g, 'x' FROM generate_series(%s::int, %s::int) g",
                         (first, first + rows - 1))
    time.sleep(0.15)  # the bound is held 100 ms below the source clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BRONZELINE_TEST_PG"), help="superuser DSN")
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10, help="new rows per table per round")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or BRONZELINE_TEST_PG) is required")

    started = time.perf_counter()
    import dagster as dg
    dagster_import = time.perf_counter() - started

    from bronzeline.config import load_config
    from bronzeline.integrations.dagster import definitions_from_plan
    from bronzeline.pipeline import run_tables
    from bronzeline.plan import build_plan

    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as name:
        tmp = Path(name)
        env = setup(args.dsn, tmp, args.tables)
        config = load_config(tmp / "bronzeline.yml", env)
        src = env["SOURCE_DSN"]

        t0 = time.perf_counter()
        plan = build_plan(config, str(tmp / "bronzeline.yml"))
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        defs = definitions_from_plan(config, plan)
        assets = list(defs.assets or [])
        defs.get_repository_def()  # resolves the asset graph, as a code location does
        t_defs = time.perf_counter() - t0

        timings: dict[str, float] = {}
        next_id = 1
        for label in ("run_tables", "run_tables per table", "dagster", "run_tables again"):
            add_rows(src, args.tables, next_id, args.rows)
            next_id += args.rows
            t0 = time.perf_counter()
            if label == "dagster":
                result = dg.materialize(assets, instance=dg.DagsterInstance.ephemeral())
                assert result.success
            elif label == "run_tables per table":  # what each asset does, without Dagster around it
                outcomes = [o for t in config.tables for o in run_tables(config, [t.name])]
            else:
                outcomes = run_tables(config)
                assert all(o.status == "loaded" and o.rows_loaded == args.rows for o in outcomes), outcomes
            timings[label] = time.perf_counter() - t0
        with psycopg.connect(env["WAREHOUSE_DSN"]) as conn:
            loaded = conn.execute("SELECT count(*), sum(rows_loaded) FROM dwh_control.extract_runs "
                                  "WHERE status = 'loaded'").fetchone()
        assert loaded == (len(timings) * args.tables, len(timings) * args.tables * args.rows), loaded

    n = args.tables
    direct = (timings["run_tables"] + timings["run_tables again"]) / 2
    print(f"bronzeline under Dagster {dg.__version__}: {n} tables, {args.rows} new rows each per round")
    print(f"  import dagster                         {dagster_import:8.2f} s")
    print(f"  plan ({len(plan.units)} units)                   {t_plan:8.3f} s")
    print(f"  Definitions from the plan              {t_defs:8.3f} s")
    for label, seconds in timings.items():
        print(f"  {label:<38} {seconds:8.2f} s  ({seconds / n * 1000:7.1f} ms per table)")
    print(f"  overhead per asset, all                {(timings['dagster'] - direct) / n * 1000:8.1f} ms "
          "(materialize minus the mean run_tables round, per table)")
    dagster_only = (timings["dagster"] - timings["run_tables per table"]) / n * 1000
    print(f"  of which Dagster's                     {dagster_only:8.1f} ms "
          "(materialize minus one run_tables call per table)")


if __name__ == "__main__":
    main()
