#!/usr/bin/env python3
"""bronzeline benchmark: a chunked first load against the single-stream first load.

On a local PostgreSQL (superuser DSN): an N-row fleet `position_history` (bench/run.py's table and
fill), then, each on an empty warehouse and timed as the whole `bronzeline run` process:
  * the single-stream first load (one window, one batch file);
  * `chunks: 4` with `run -j 1` (the four chunks one after another);
  * `chunks: 4` with `run -j 2` (two chunks at a time);
each repeated (--repeat), reported as min / median, with rows/s.

    python bench/chunks.py --dsn "host=127.0.0.1 port=54335 user=postgres password=… dbname=postgres" --rows 5000000

What to expect, and the model for `-j 8` on an 8-core machine
--------------------------------------------------------------
A single-stream first load is a pipeline of three stages that already run at once: the source
backend (scan + CSV out), bronzeline (gzip + sha256 on a worker thread, the COPY writer on another),
and the warehouse backend (COPY straight into the empty table, no index, then one sort to build the
primary key and the watermark index). It uses about three cores and is as fast as one stream gets.

A chunk is the same pipeline over a key range, with one difference on the warehouse side: chunks
load into a bronze table that other chunks are filling, so each one COPYs into bronze with its
primary key and watermark index in place (straight in while bronze holds nothing of its key range —
a first load; through a temporary stage and `INSERT … ON CONFLICT` otherwise, e.g. after `reseed`) —
per row, a heap insert, two btree inserts and their WAL, instead of one bulk index build at the end.
(The figures below the model were measured when every chunk still staged and merged; at 2 M rows,
COPYing straight in took `-j 1` from 0.47 × to 0.63 × the single stream and `-j 2` from 0.51 × to
0.66 ×, both in the same minute.) So:

  * with `-j 1`, a chunked load is *slower* than one stream (the merge and the per-row index upkeep,
    plus one key sort to cut the ranges); chunking alone buys resumability, not speed;
  * what scales with workers: the source's scan and CSV formatting, the gzip/sha256 of each batch
    file, the stage COPY and each chunk's merge CPU — each chunk has its own source backend, its own
    bronzeline threads (isal/zlib release the GIL) and its own warehouse backend;
  * what does not scale: the warehouse's WAL (every merged row and index entry is WAL-logged through
    one WAL stream: insert locks, then the disk's write bandwidth) and the shared buffer churn of one
    growing table and its indexes; with the source on the same machine, the two databases also share
    the cores.

The model, in numbers. Let T1 be the `-j 1` chunked time and p the share of it that is per-chunk
work running in separate processes (source scan and CSV, gzip/sha256, stage COPY, merge CPU); 1 - p is
what one warehouse serializes (WAL insertion and flush, contention on one table's index pages).
Amdahl: T(j) = T1 × ((1 - p) + p / j), as long as there are cores for j chunks (each uses about two:
its source backend and its warehouse backend, plus bronzeline's gzip thread).

Measured on the 2-core test machine (source, bronzeline and warehouse on the same two cores, shared
with other users; 5 M rows, min of 2): single stream 38.5 s, `chunks: 4` `-j 1` 76.4 s (0.50 × the
single stream: the merge and per-row index upkeep), `-j 2` 62.3 s (1.23 × `-j 1`). An earlier run
(min of 1, a busier moment): 58.4 s, 76.0 s, 60.6 s (1.25 × `-j 1`). By Amdahl, T1/T2 ≈ 1.24 is
p ≈ 0.38 — a lower bound, since this machine has no idle core to give the second chunk: a single
stream already keeps both cores busy.

On paper, an 8-core warehouse with the source on its own server: the WAL of 5 M rows with a primary
key and a watermark index is about 1.5 GB, a few seconds of sequential writes on an SSD, against
tens of seconds of CPU (source scan, gzip, stage COPY and index, merge) spread over the chunks'
processes, so p ≈ 0.8 is the realistic figure, and four to eight chunks fill the cores. Then
`-j 8` ≈ T1 × (0.2 + 0.8 / 8) = T1 / 3.3; with T1 ≈ 1.5–2 × the single stream (as measured here),
that is about 1.7–2.2 × faster than one stream, whose three pipelined processes cannot use more than
about three cores. With the pessimistic p ≈ 0.38 from this machine, `-j 8` would only match the
single stream. Beyond that the warehouse's WAL and disk are the limit, whatever the number of
chunks. Chunks pay off in another way too: a 10-hour load becomes N resumable pieces that
orchestrator tasks (`run TABLE --chunk K`) can run from separate machines against one warehouse, and
a failure costs one chunk, not the whole load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
assert _spec is not None and _spec.loader is not None
base = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = base  # its dataclasses look their module up
_spec.loader.exec_module(base)

SRC_DB, WH_DB = "bench_chunks_source", "bench_chunks_warehouse"


def scenario(tmp: Path, env: dict[str, str], wh: str, chunks: int | None, workers: int) -> tuple[float, int]:
    """One first load on an empty warehouse; the whole `run` process's wall time."""
    with psycopg.connect(wh, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bronze CASCADE; DROP SCHEMA IF EXISTS dwh_control CASCADE")
    shutil.rmtree(tmp / "blob", ignore_errors=True)
    table = base.POSITION_TABLE + (f"    chunks: {chunks}\n" if chunks else "")
    base.config(tmp, table)
    base.bronzeline(tmp, env, "migrate")
    wall, _ = base.bronzeline(tmp, env, "run", "-j", str(workers))
    with psycopg.connect(wh, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM bronze.position_history").fetchone()
    assert row is not None
    return float(wall), int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="superuser DSN of a local PostgreSQL 15 + PostGIS")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=4)
    args = parser.parse_args()

    base.recreate(args.dsn, SRC_DB)
    base.recreate(args.dsn, WH_DB)
    src, wh = base.dsn_for(args.dsn, SRC_DB), base.dsn_for(args.dsn, WH_DB)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(base.POSITION_DDL)
    step = 1_000_000
    for first in range(1, args.rows + 1, step):
        base.fill(src, first, min(args.rows, first + step - 1))
    env = {**os.environ, "SOURCE_DSN": src, "WAREHOUSE_DSN": wh}
    cases = [("single stream (one window)", None, 1), (f"chunks: {args.chunks}, -j 1", args.chunks, 1),
             (f"chunks: {args.chunks}, -j 2", args.chunks, 2)]
    results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory(prefix="bronzeline-bench-chunks-") as tmp:
        for _ in range(args.repeat):
            for name, chunks, workers in cases:  # alternate, so a slow moment hits every case alike
                wall, rows = scenario(Path(tmp), env, wh, chunks, workers)
                if rows != args.rows:
                    raise SystemExit(f"{name}: bronze has {rows} rows, expected {args.rows}")
                results[name].append(wall)
    single = min(results[cases[0][0]])
    print(f"\nfirst load of {args.rows:,} rows (whole `bronzeline run` process, min / median of {args.repeat})")
    print(f"{'':32} {'min s':>8} {'median s':>9} {'rows/s':>10} {'vs single':>10}")
    for name, seconds in results.items():
        best, median = min(seconds), sorted(seconds)[len(seconds) // 2]
        print(f"{name:32} {best:8.2f} {median:9.2f} {args.rows / best:10,.0f} {single / best:9.2f}×")


if __name__ == "__main__":
    main()
