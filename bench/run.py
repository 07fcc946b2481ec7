#!/usr/bin/env python3
"""bronzeline benchmark: full and incremental loads side by side with the COPY pipe (and peers).

On a local PostgreSQL (superuser DSN), in one run:
  * generates an N-row fleet `position_history` (≈80 IMEIs, several days, geometry(Point,4326));
  * the physical limit: `psql \\copy … to stdout | psql \\copy … from stdin` (text), into a table
    without and with the primary key;
  * bronzeline's full initial load (whole `bronzeline run` process, batch file kept);
  * an incremental run after 10,000 new rows;
  * one `bronzeline run` over 50 small tables (per-table cost beyond process start);
  * peak RSS of the bronzeline process;
  * start-up: the median time to import the CLI module (`python -c 'import bronzeline.cli'`), which
    every run pays, next to the interpreter's own start;
  * dlt and Sling, when installed (a python with `dlt[postgres,sql_database]`, and the `sling` binary).
Each measurement is repeated (--repeat) and reported as min / median.

    python bench/run.py --dsn "host=127.0.0.1 port=54329 user=postgres password=… dbname=postgres" --rows 1000000
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SRC_DB, WH_DB = "bench_source", "bench_warehouse"

POSITION_DDL = """
CREATE SCHEMA IF NOT EXISTS tracksolid;
DROP TABLE IF EXISTS tracksolid.position_history;
CREATE TABLE tracksolid.position_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL, gps_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    lat double precision, lng double precision, speed real, heading smallint, ignition boolean,
    source text, geom geometry(Point, 4326));
CREATE INDEX ON tracksolid.position_history (recorded_at);  -- the watermark is indexed, as verify asks
"""

FILL = """
INSERT INTO tracksolid.position_history (imei, gps_time, recorded_at, lat, lng, speed, heading, ignition, source, geom)
SELECT '3535490' || lpad((g %% 80)::text, 8, '0'),
       ts - (random() * interval '20 minutes'), ts,
       lat, lng, (random() * 110)::real, (random() * 359)::smallint, random() > 0.3,
       CASE WHEN g %% 7 = 0 THEN 'track_list' ELSE 'poll' END,
       ST_SetSRID(ST_MakePoint(lng, lat), 4326)
FROM (SELECT g, %(start)s::timestamptz + (g - %(first)s) * %(step)s::interval AS ts,
             -1.29 + random() * 0.2 AS lat, 36.75 + random() * 0.2 AS lng
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) g) s
"""


@dataclass
class Result:
    name: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def dsn_for(admin: str, db: str) -> str:
    params = conninfo_to_dict(admin)
    params["dbname"] = db
    return make_conninfo(**params)  # type: ignore[arg-type]


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the child)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv if not shell else argv[0], env=env, cwd=cwd, shell=shell,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        shown = " ".join(a if "://" not in a else "<url>" for a in argv)  # URLs carry passwords
        raise SystemExit(f"failed: {shown}\n{out[-2000:]}\n{err[-4000:]}")
    return wall, usage.ru_maxrss / 1024


def recreate(admin: str, db: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with psycopg.connect(dsn_for(admin, db), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")


def fill(src: str, first: int, last: int) -> None:
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(FILL, {"start": "2026-11-01T00:00:00+03", "first": first, "last": last, "step": "250 ms"})
        conn.execute("ANALYZE tracksolid.position_history")


def reset_warehouse(wh: str) -> None:
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bronze CASCADE; DROP SCHEMA IF EXISTS dwh_control CASCADE; "
                     "DROP SCHEMA IF EXISTS pipe CASCADE; CREATE SCHEMA pipe")


def config(tmp: Path, tables: str) -> Path:
    path = tmp / "bronzeline.yml"
    path.write_text("project: bench\ntimezone: Africa/Nairobi\nconnections:\n"
                    "  source: {dsn: \"${SOURCE_DSN}\"}\n  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
                    "blob: {url: \"file://./blob\"}\ntables:\n" + tables)
    return path


POSITION_TABLE = """  - name: position_history
    from: tracksolid.position_history
    watermark: recorded_at
    key: [id]
    geometry: [geom]
"""


def bronzeline(tmp: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    return timed([sys.executable, "-m", "bronzeline.cli", "-c", str(tmp / "bronzeline.yml"), *args], env, cwd=tmp)


def bench_pipe(src: str, wh: str, rows: int, with_pk: bool) -> float:
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS pipe.position_history")
        conn.execute("CREATE TABLE pipe.position_history (LIKE bronze.position_history"
                     + (" INCLUDING INDEXES)" if with_pk else ")"))
    cmd = (f"{psql} -X -q -d \"$SRC\" -c '\\copy tracksolid.position_history to stdout' | "
           f"{psql} -X -q -d \"$WH\" -c '\\copy pipe.position_history from stdin'")
    wall, _ = timed([cmd], {**os.environ, "SRC": src, "WH": wh}, shell=True)
    return wall


DLT_SCRIPT = """
import sys, dlt
from dlt.sources.sql_database import sql_table
src_url, wh_url, workdir, mode = sys.argv[1:5]
table = sql_table(credentials=src_url, schema="tracksolid", table="position_history", backend="pyarrow",
                  incremental=dlt.sources.incremental("recorded_at"))
pipeline = dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.postgres(wh_url),
                        dataset_name="dlt_bench", pipelines_dir=workdir)
info = pipeline.run(table, write_disposition="merge", primary_key="id")
"""


def url_of(dsn: str) -> str:
    p = conninfo_to_dict(dsn)
    return f"postgresql://{p.get('user')}:{p.get('password', '')}@{p.get('host')}:{p.get('port', 5432)}/{p['dbname']}"


def bench_peers(args: argparse.Namespace, src: str, wh: str, results: dict[str, Result], tmp: Path) -> None:
    """dlt (pyarrow backend, merge on id, incremental on recorded_at) and Sling, when installed."""
    runs: list[tuple[str, list[str], dict[str, str]]] = []
    if args.dlt_python:
        script = tmp / "dlt_bench.py"
        script.write_text(DLT_SCRIPT)
        runs.append(("dlt 1.x (pyarrow, merge)",
                     [args.dlt_python, str(script), url_of(src), url_of(wh), str(tmp / "dlt")], {}))
    if args.sling:
        runs.append(("Sling (incremental, pk id)",
                     [args.sling, "run", "--src-conn", "SRC", "--src-stream", "tracksolid.position_history",
                      "--tgt-conn", "TGT", "--tgt-object", "sling_bench.position_history", "--mode", "incremental",
                      "--primary-key", "id", "--update-key", "recorded_at"],
                     {"SRC": url_of(src) + "?sslmode=disable", "TGT": url_of(wh) + "?sslmode=disable"}))
    for name, argv, extra in runs:
        full, incr = Result(f"{name} full", args.rows), Result(f"{name} incremental", args.increment)
        for _ in range(args.repeat):
            with psycopg.connect(wh, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS dlt_bench CASCADE; DROP SCHEMA IF EXISTS dlt_bench_staging CASCADE;"
                             " DROP SCHEMA IF EXISTS sling_bench CASCADE; CREATE SCHEMA sling_bench")
            shutil.rmtree(tmp / "dlt", ignore_errors=True)
            env = {**os.environ, **extra}
            full.seconds.append(timed([*argv, "full"] if "dlt" in name else argv, env, cwd=tmp)[0])
            with psycopg.connect(src, autocommit=True) as conn:
                last = conn.execute("SELECT max(id) FROM tracksolid.position_history").fetchone()
            first = int(last[0]) + 1 if last and last[0] else 1
            fill(src, first, first + args.increment - 1)
            incr.seconds.append(timed([*argv, "incr"] if "dlt" in name else argv, env, cwd=tmp)[0])
            print(f"  {name}: full {full.seconds[-1]:.2f}s, incr {incr.seconds[-1]:.2f}s", flush=True)
        results[full.name], results[incr.name] = full, incr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BRONZELINE_BENCH_DSN") or os.environ.get("BRONZELINE_TEST_PG"),
                        help="superuser DSN of a local PostgreSQL with PostGIS available")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--increment", type=int, default=10_000)
    parser.add_argument("--small-tables", type=int, default=50)
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--dlt-python", help="a python with dlt[postgres,sql_database] installed")
    parser.add_argument("--sling", help="the sling binary (pip install sling-linux-amd64==1.4.11)")
    args = parser.parse_args()
    if not args.dsn:
        raise SystemExit("pass --dsn (or set BRONZELINE_BENCH_DSN)")
    admin = args.dsn
    # An installed package has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module in every process: measure the former.
    import bronzeline as package

    compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)
    src, wh = dsn_for(admin, SRC_DB), dsn_for(admin, WH_DB)
    print(f"generating {args.rows:,} rows of position_history …", flush=True)
    recreate(admin, SRC_DB)
    recreate(admin, WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(POSITION_DDL)
    fill(src, 1, args.rows)
    env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh}
    results: dict[str, Result] = {k: Result(k, n) for k, n in [
        ("pipe (text, no key)", args.rows), ("pipe (text, primary key)", args.rows),
        ("bronzeline full", args.rows), ("bronzeline incremental", args.increment)]}
    next_id = args.rows
    with tempfile.TemporaryDirectory(prefix="bronzeline-bench-") as tmpdir:
        tmp = Path(tmpdir)
        config(tmp, POSITION_TABLE)
        for i in range(args.repeat):
            reset_warehouse(wh)
            shutil.rmtree(tmp / "blob", ignore_errors=True)
            bronzeline(tmp, env, "migrate")
            wall, rss = bronzeline(tmp, env, "run")
            results["bronzeline full"].seconds.append(wall)
            results["bronzeline full"].rss_mb.append(rss)
            results["pipe (text, no key)"].seconds.append(bench_pipe(src, wh, args.rows, with_pk=False))
            results["pipe (text, primary key)"].seconds.append(bench_pipe(src, wh, args.rows, with_pk=True))
            fill(src, next_id + 1, next_id + args.increment)
            next_id += args.increment
            time.sleep(0.2)
            wall, rss = bronzeline(tmp, env, "run")
            results["bronzeline incremental"].seconds.append(wall)
            results["bronzeline incremental"].rss_mb.append(rss)
            print(f"  round {i + 1}: full {results['bronzeline full'].seconds[-1]:.2f}s, "
                  f"pipe {results['pipe (text, no key)'].seconds[-1]:.2f}s, incr {wall:.2f}s", flush=True)
        bench_peers(args, src, wh, results, tmp)
        startup = min(timed([sys.executable, "-m", "bronzeline.cli", "--version"], env)[0] for _ in range(3))
        imports = import_times(env)
        if not args.skip_small:
            small = small_tables(src, wh, tmp, env, args.small_tables, args.repeat)
            results[small.name] = small
    report(results, startup, args.small_tables, imports)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of any child process (max): {peak:.0f} MB")


SMALL_TABLE = """
DROP TABLE IF EXISTS tracksolid.{0};
CREATE TABLE tracksolid.{0} (id int PRIMARY KEY, v text, recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.{0} (id, v) SELECT g, md5(g::text) FROM generate_series(1, 100) g
"""
SMALL_INSERT = "INSERT INTO tracksolid.{} (id, v) SELECT g, 'x' FROM generate_series(%s::int, %s::int) g"


def small_tables(src: str, wh: str, tmp: Path, env: dict[str, str], count: int, repeat: int) -> Result:
    with psycopg.connect(src, autocommit=True) as conn:
        for i in range(count):
            conn.execute(sql.SQL(SMALL_TABLE).format(sql.Identifier(f"small_{i:02d}")))
    tables = "".join(f"  - name: small_{i:02d}\n    from: tracksolid.small_{i:02d}\n    watermark: recorded_at\n"
                     f"    key: [id]\n" for i in range(count))
    config(tmp, tables)
    reset_warehouse(wh)
    bronzeline(tmp, env, "migrate")
    time.sleep(0.2)
    result = Result(f"run over {count} small tables", count * 100)
    for i in range(repeat):
        with psycopg.connect(src, autocommit=True) as conn:
            for t in range(count):
                first = 1000 + i * 10
                conn.execute(sql.SQL(SMALL_INSERT).format(sql.Identifier(f"small_{t:02d}")), (first, first + 9))
        time.sleep(0.2)
        wall, rss = bronzeline(tmp, env, "run")
        result.seconds.append(wall)
        result.rss_mb.append(rss)
    return result


def import_times(env: dict[str, str], runs: int = 9) -> tuple[float, float]:
    """(median seconds of `python -c 'import bronzeline.cli'`, of `python -c pass`), each in a fresh process."""
    def median_of(code: str) -> float:
        return statistics.median(timed([sys.executable, "-c", code], env)[0] for _ in range(runs))

    median_of("import bronzeline.cli")  # once first: compiled bytecode written, files in the page cache
    return median_of("import bronzeline.cli"), median_of("pass")


def report(results: dict[str, Result], startup: float, small_count: int, imports: tuple[float, float]) -> None:
    pipe = results["pipe (text, no key)"]
    pipe_rate = pipe.rows / pipe.median
    print()
    print(f"{'measurement':34} {'rows':>10} {'min s':>8} {'median s':>9} {'rows/s':>11} {'× pipe':>7} {'peak RSS':>9}")
    for r in results.values():
        rate = r.rows / r.median
        rss = f"{max(r.rss_mb):.0f} MB" if r.rss_mb else ""
        ratio = f"{rate / pipe_rate:.2f}" if "full" in r.name or "pipe" in r.name else ""
        print(f"{r.name:34} {r.rows:>10,} {r.best:>8.2f} {r.median:>9.2f} {rate:>11,.0f} {ratio:>7} {rss:>9}")
    print(f"\nprocess start (bronzeline --version): {startup * 1000:.0f} ms")
    cli_import, interpreter = imports
    incremental = results["bronzeline incremental"]
    print(f"import bronzeline.cli: {cli_import * 1000:.0f} ms (median; the interpreter alone "
          f"{interpreter * 1000:.0f} ms); incremental run of {incremental.rows:,} new rows: "
          f"{incremental.median:.2f} s (median), {incremental.best:.2f} s (min)")
    for r in results.values():
        if "tables" in r.name:
            print(f"{r.name}: {(r.median - startup) / small_count * 1000:.0f} ms per table beyond process start")


if __name__ == "__main__":
    main()
