"""The one run path (pipeline.run_tables): what a user sees when a run fails, workers sharing what a
pass learned, typed events, and no half-written batch left behind."""

from __future__ import annotations

import time

import pytest

from bronzeline.events import BatchLoaded, BoundHeldBack, Event, Extracting
from tests.conftest import dsn_for
from tests.integration.pipeline import Pipeline, table_digest


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_failed_run_leaves_no_half_written_batch_and_says_so_once(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.twins (id int PRIMARY KEY, v text, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config("  - {name: twins, from: tracksolid.twins, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    with pipeline.src() as conn:  # later, someone drops the source's key and duplicates creep in
        conn.execute("ALTER TABLE tracksolid.twins DROP CONSTRAINT twins_pkey")
        conn.execute("INSERT INTO tracksolid.twins (id, v) VALUES (1, 'a'), (1, 'b'), (2, 'c')")
    time.sleep(0.15)
    for _ in range(2):
        proc = pipeline.cli("run")
        assert proc.returncode == 1
        # one line, starting with the table, without retry bookkeeping for a terminal failure
        assert error_lines(proc.stderr) == [line for line in proc.stderr.splitlines() if "not unique" in line]
        [line] = error_lines(proc.stderr)
        assert line.startswith("error: twins: ") and "[attempt" not in line, line
        assert pipeline.files("exports", "twins") == []  # nothing half-written for `status`/`verify` to disagree on
    with pipeline.wh() as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM dwh_control.extract_runs ORDER BY run_id")]
    assert statuses == ["failed", "failed"]


def test_a_config_problem_is_one_line_without_attempts(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.t (id int PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config("  - {name: t, from: tracksolid.t, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    with pipeline.src() as conn:
        conn.execute("ALTER TABLE tracksolid.t RENAME COLUMN recorded_at TO created_at")
    proc = pipeline.cli("run")
    assert proc.returncode == 1
    [line] = error_lines(proc.stderr)
    assert line.startswith("error: t: ") and "[attempt" not in line, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # printed once, not once per layer


def test_run_blames_bronze_not_the_source_when_the_key_changed(pipeline: Pipeline) -> None:
    """The config's key moved to the source's real key after the first migrate: `run` must say that
    bronze still has the old key (and to migrate), not that the source's key is not unique."""
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.fixes (imei text, seq int, recorded_at timestamptz NOT NULL "
                     "DEFAULT now(), PRIMARY KEY (imei, seq))")
        conn.execute("INSERT INTO tracksolid.fixes (imei, seq) VALUES ('a', 1), ('a', 2)")
    pipeline.write_config("  - {name: fixes, from: tracksolid.fixes, watermark: recorded_at, key: [seq]}\n")
    pipeline.cli("migrate", check=True)  # seq happens to be unique so far
    with pipeline.src() as conn:
        conn.execute("INSERT INTO tracksolid.fixes (imei, seq) VALUES ('b', 1)")
    pipeline.write_config("  - {name: fixes, from: tracksolid.fixes, watermark: recorded_at, key: [imei, seq]}\n")
    time.sleep(0.15)
    proc = pipeline.cli("run")
    assert proc.returncode == 1
    [line] = error_lines(proc.stderr)
    assert line.startswith("error: fixes: ") and "not unique at the source" not in line, line
    assert "(imei, seq)" in line and "bronzeline migrate" in line, line
    assert pipeline.files("exports", "fixes") == []
    pipeline.cli("migrate", check=True)  # moves bronze's primary key to (imei, seq)
    assert [o.status for o in pipeline.run()] == ["loaded"]
    with pipeline.src() as s, pipeline.wh() as w:
        assert table_digest(s, "tracksolid.fixes") == table_digest(w, "bronze.fixes")


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_share_what_the_pass_learned_about_a_dead_source(pipeline: Pipeline, workers: int) -> None:
    names = ("a", "b", "c", "d")
    with pipeline.src() as conn:
        for name in names:
            conn.execute(f"CREATE TABLE tracksolid.{name} (id int PRIMARY KEY, "
                         "recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config("".join(f"  - {{name: {n}, from: tracksolid.{n}, watermark: recorded_at, key: [id]}}\n"
                                  for n in names), extra_yaml="retries: {attempts: 3, backoff_seconds: 1}\n")
    pipeline.cli("migrate", check=True)
    pipeline.source_dsn = dsn_for(pipeline.source_dsn, port="1")  # nothing listens there
    started = time.monotonic()
    proc = pipeline.cli("run", "-j", str(workers))
    elapsed = time.monotonic() - started
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    waited = proc.stderr.count("attempt 1 of 3 failed")
    assert 1 <= waited <= workers, proc.stderr  # only the tables already under way wait and retry
    assert len(error_lines(proc.stderr)) == len(names)
    assert proc.stderr.count("not run: source 'source' did not answer") == len(names) - waited
    assert elapsed < 8, elapsed
    with pipeline.wh() as conn:
        failed = dict(conn.execute("SELECT table_name, count(*) FROM dwh_control.extract_runs "
                                   "WHERE status = 'failed' GROUP BY 1").fetchall())
    assert sorted(failed.values()) == sorted([1] * (len(names) - waited) + [3] * waited), failed


def test_events_are_typed(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.t (id int PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.t (id) SELECT generate_series(1, 10)")
    pipeline.write_config("  - {name: t, from: tracksolid.t, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    events: list[Event] = []
    with pipeline.src() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT txid_current()")  # an open transaction: the bound is held back below its start
        time.sleep(0.3)
        [outcome] = pipeline.run(on_event=events.append)
        holder.execute("ROLLBACK")
    assert outcome.status == "loaded" and outcome.rows_loaded == 10
    held = [e for e in events if isinstance(e, BoundHeldBack)]
    assert held and held[0].table == "t" and held[0].seconds >= 0.3 and "pid" in held[0].holder
    [extracting] = [e for e in events if isinstance(e, Extracting)]
    assert extracting.path.endswith(".csv.gz") and "/exports/t/" in extracting.path
    [loaded] = [e for e in events if isinstance(e, BatchLoaded)]
    assert (loaded.run_id, loaded.rows_extracted, loaded.rows_loaded, loaded.rows_skipped) == (outcome.runs[0], 10,
                                                                                               10, 0)
    assert outcome.window is not None and loaded.window_start is None and loaded.window_end == outcome.window.end
    assert "/processed/t/" in loaded.path and loaded.path.endswith(extracting.path.rsplit("/", 1)[-1])
    with pipeline.src() as s, pipeline.wh() as w:
        assert table_digest(s, "tracksolid.t") == table_digest(w, "bronze.t")
