"""Errors through the command line (README, commands): exit codes, clear messages, no tracebacks, no secrets."""

from __future__ import annotations

import gzip
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.cli import Result, invoke
from tests.conftest import dsn_for
from tests.integration.pipeline import Pipeline, drop_pipeline, make_pipeline, table_digest

SECRET = f"Sx{uuid.uuid4().hex}"
UNREACHABLE = f"host=127.0.0.1 port=1 dbname=nothing user=nobody password={SECRET} connect_timeout=5"

CONFIG = """\
project: fleet
timezone: Africa/Nairobi
connections:
  source: {dsn: "${SOURCE_DSN}"}
  warehouse: {dsn: "${WAREHOUSE_DSN}"}
blob:
  url: file://./blob
tables:
  - name: things
    from: tracksolid.things
    watermark: recorded_at
    key: [id]
"""


def bronzeline(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI as a user runs it (in process), without any database set up."""
    return invoke(cwd, *args, env=env)


def assert_clean_failure(proc: Result | subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, `error: …` on stderr naming every needle, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def assert_no_secret(secret: str, *procs: Result | subprocess.CompletedProcess[str]) -> None:
    for proc in procs:
        assert secret not in proc.stdout, proc.args
        assert secret not in proc.stderr, proc.args


def unreachable_env() -> dict[str, str]:
    return {"SOURCE_DSN": UNREACHABLE, "WAREHOUSE_DSN": UNREACHABLE}


# ------------------------------------------------------------------------------ no database needed


def test_bad_config_key(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG.replace("    key: [id]\n", "    key: [id]\n    wat: 1\n"))
    for command in (["migrate"], ["run"], ["status"]):
        proc = bronzeline(tmp_path, "-c", str(tmp_path / "bronzeline.yml"), *command, env=unreachable_env())
        assert_clean_failure(proc, "tables[things].wat", "unknown key")


def test_config_found_through_env_and_cwd(tmp_path: Path) -> None:
    bad = CONFIG.replace("project: fleet\n", "project: fleet\nprojekt: typo\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "custom.yml").write_text(bad)
    # $BRONZELINE_CONFIG is read (the typo in it is reported)
    proc = bronzeline(tmp_path, "status", env={**unreachable_env(), "BRONZELINE_CONFIG": str(tmp_path / "a" /
                                                                                             "custom.yml")})
    assert_clean_failure(proc, "projekt", "custom.yml")
    # ./bronzeline.yml is read
    (tmp_path / "bronzeline.yml").write_text(bad.replace("projekt", "projekd"))
    assert_clean_failure(bronzeline(tmp_path, "status", env=unreachable_env()), "projekd")
    # no config anywhere
    (tmp_path / "bronzeline.yml").unlink()
    assert_clean_failure(bronzeline(tmp_path, "status", env=unreachable_env()), "not found")


def test_missing_variable(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG)
    proc = bronzeline(tmp_path, "migrate", env={"WAREHOUSE_DSN": UNREACHABLE})
    assert_clean_failure(proc, "SOURCE_DSN", "connections.source.dsn")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG.replace("    key: [id]\n", "    key: [id\n"))
    proc = bronzeline(tmp_path, "run", env=unreachable_env())
    assert_clean_failure(proc, "line ")


def test_unreachable_database(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG)
    procs = []
    for command in (["migrate"], ["status"], ["run"], ["runs"]):
        proc = bronzeline(tmp_path, *command, env=unreachable_env())
        assert_clean_failure(proc, "cannot connect", "port 1")
        procs.append(proc)
    # the password written into a URL DSN is not shown either
    url = f"postgresql://nobody:{SECRET}@127.0.0.1:1/nothing?connect_timeout=5"
    proc = bronzeline(tmp_path, "migrate", env={"SOURCE_DSN": url, "WAREHOUSE_DSN": url})
    assert_clean_failure(proc, "cannot connect")
    procs.append(proc)
    assert_no_secret(SECRET, *procs)


@pytest.mark.parametrize("dsn", [
    # a '%' that is not a percent-escape: libpq refuses the URL and quotes the password in its message
    "postgresql://nobody:50%off!Zq7x@127.0.0.1:1/nothing",
    # an unquoted space in a key=value password: libpq quotes the second half
    "host=127.0.0.1 port=1 user=nobody password=first Zq7x",
])
def test_password_in_a_dsn_libpq_cannot_parse_is_not_shown(tmp_path: Path, dsn: str) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG)
    for args in (["migrate"], ["--debug", "status"]):
        proc = bronzeline(tmp_path, *args, env={"SOURCE_DSN": dsn, "WAREHOUSE_DSN": dsn})
        assert proc.returncode == 1 and "error:" in proc.stderr, proc.stderr
        assert "dsn" in proc.stderr and "not valid" in proc.stderr
        assert "Zq7x" not in proc.stderr and "Zq7x" not in proc.stdout, proc.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG)
    for args in (["no-such-command"], ["run", "--no-such-option"], ["backfill", "things"], ["--bogus", "run"]):
        proc = bronzeline(tmp_path, *args, env=unreachable_env())
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bronzeline.yml").write_text(CONFIG)
    plain = bronzeline(tmp_path, "migrate", env=unreachable_env())
    debug = bronzeline(tmp_path, "--debug", "migrate", env=unreachable_env())
    assert "Traceback" not in plain.stderr
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "error: cannot connect" in debug.stderr
    assert_no_secret(SECRET, plain, debug)
    # a config error too
    (tmp_path / "bronzeline.yml").write_text(CONFIG.replace("project: fleet", "project: fleet\nextra: 1"))
    debug = bronzeline(tmp_path, "--debug", "run", env=unreachable_env())
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "extra" in debug.stderr


# ---------------------------------------------------------------------------------- with a database

THINGS = """
CREATE TABLE tracksolid.things (
    id int PRIMARY KEY, label text, recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.things (id, label) SELECT g, 'thing ' || g FROM generate_series(1, 20) g;
"""

THINGS_TABLE = """\
  - name: things
    from: tracksolid.things
    watermark: recorded_at
    key: [id]
"""


def test_missing_source_table(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(THINGS)
    pipeline.write_config(THINGS_TABLE + """\
  - name: ghosts
    from: tracksolid.ghosts
    watermark: recorded_at
    key: [id]
  - name: wrong_mark
    from: tracksolid.things
    watermark: created_at
    key: [id]
""")
    proc = pipeline.cli("migrate")
    assert_clean_failure(proc, "2 problem(s)", "ghosts", "tracksolid.ghosts", "does not exist", "wrong_mark",
                         "created_at")
    time.sleep(0.15)
    # `run` goes on with the good table, fails the others, exits 1
    proc = pipeline.cli("run")
    assert proc.returncode == 1, proc.stderr
    assert "things: loaded 20 of 20 rows" in proc.stdout
    assert "ghosts" in proc.stderr and "tracksolid.ghosts" in proc.stderr and "Traceback" not in proc.stderr
    # naming a table that is not in the config is an error too
    assert_clean_failure(pipeline.cli("run", "nope"), "no table named 'nope'")


def dump_files(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            yield path, (gzip.decompress(data) if path.name.endswith(".gz") else data)


def test_password_appears_nowhere(pipeline: Pipeline) -> None:
    password = pipeline.password
    with pipeline.src() as conn:
        conn.execute(THINGS)
        # a table whose key is not unique: its run fails, and the failure is recorded in the run row
        conn.execute("CREATE TABLE tracksolid.dupes (id int, recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config(THINGS_TABLE + "  - {name: dupes, from: tracksolid.dupes, watermark: recorded_at, "
                                         "key: [id]}\n")
    procs = [pipeline.cli("migrate", check=True)]
    with pipeline.src() as conn:  # after migrate, which would have refused the key
        conn.execute("INSERT INTO tracksolid.dupes (id) VALUES (1), (1)")
    time.sleep(0.15)
    procs.append(pipeline.cli("run"))
    assert procs[-1].returncode == 1
    for args in (["status"], ["status", "--json"], ["runs"], ["runs", "--json"], ["--debug", "run"]):
        procs.append(pipeline.cli(*args))

    # failing commands: a wrong password for the warehouse login, a wrong one for the source login,
    # both in key=value and URL form, with and without --debug
    wrong = f"Wr{uuid.uuid4().hex}"
    params = conninfo_to_dict(pipeline.warehouse_dsn)
    wh_url = (f"postgresql://{params['user']}:{wrong}@{params['host']}:{params['port']}/{params['dbname']}")
    failing = [
        pipeline.cli("migrate", env={"WAREHOUSE_DSN": dsn_for(pipeline.warehouse_dsn, password=wrong)}),
        pipeline.cli("--debug", "run", env={"WAREHOUSE_DSN": dsn_for(pipeline.warehouse_dsn, password=wrong)}),
        pipeline.cli("status", env={"WAREHOUSE_DSN": wh_url}),
        pipeline.cli("run", env={"SOURCE_DSN": dsn_for(pipeline.source_dsn, password=wrong)}),
        pipeline.cli("--debug", "migrate", env={"SOURCE_DSN": dsn_for(pipeline.source_dsn, password=wrong)}),
    ]
    for proc in failing:
        assert proc.returncode == 1, (proc.args, proc.stderr)
        assert "authentication failed" in proc.stderr or "cannot connect" in proc.stderr, proc.stderr
    assert_no_secret(password, *procs, *failing)
    assert_no_secret(wrong, *failing)

    # no file under the project folder carries it: config, batch files (uncompressed), manifests
    files = list(dump_files(pipeline.tmp))
    assert any(p.name.endswith(".manifest.json") for p, _ in files)
    assert any(p.name.endswith(".csv.gz") for p, _ in files)
    for path, data in files:
        assert password.encode() not in data, path
        assert wrong.encode() not in data, path

    # nor any column of any control table, run rows included (one of them failed, with a message)
    with pipeline.wh() as conn:
        failed = conn.execute("SELECT error_message FROM dwh_control.extract_runs WHERE status = 'failed'").fetchall()
        assert failed and all(r[0] for r in failed)
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'dwh_control'").fetchall()]
        assert "extract_runs" in tables
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
                sql.Identifier("dwh_control", table))).fetchall()
            for (text,) in rows:
                assert password not in text and wrong not in text, table


def test_key_not_unique_fails_and_changes_nothing(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        # no primary key at the source: nothing stops two rows with one id
        conn.execute("CREATE TABLE tracksolid.pings (id int, v text, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.pings (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        conn.execute("CREATE TABLE tracksolid.twins (id int, v text, recorded_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO tracksolid.twins (id, v) VALUES (1, 'a'), (2, 'c')")
    pipeline.write_config(
        "  - {name: pings, from: tracksolid.pings, watermark: recorded_at, key: [id]}\n"
        "  - {name: twins, from: tracksolid.twins, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    with pipeline.src() as conn:  # after migrate, which looks for duplicate keys and would refuse
        conn.execute("INSERT INTO tracksolid.twins (id, v) VALUES (1, 'b')")
    time.sleep(0.15)
    pipeline.cli("run", "pings", check=True)

    with pipeline.wh() as conn:
        before = table_digest(conn, "bronze.pings")
        mark = conn.execute("SELECT last_extracted_at FROM dwh_control.extract_watermarks "
                            "WHERE table_name = 'pings'").fetchone()
        assert before[0] == 3 and mark is not None and mark[0] is not None
    with pipeline.src() as conn:
        conn.execute("INSERT INTO tracksolid.pings (id, v) VALUES (4, 'd'), (4, 'e'), (5, 'f')")
    time.sleep(0.15)

    # an incremental batch into a bronze table that has rows (staged merge), and a first batch into an
    # empty bronze table (direct COPY): both refuse the duplicate key
    for table in ("pings", "twins"):
        proc = pipeline.cli("run", table)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "not unique" in proc.stderr and "Traceback" not in proc.stderr
        assert f"{table}: loaded" not in proc.stdout

    with pipeline.wh() as conn:
        assert table_digest(conn, "bronze.pings") == before
        assert conn.execute("SELECT count(*) FROM bronze.twins").fetchone() == (0,)
        marks = dict(conn.execute("SELECT table_name, last_extracted_at FROM dwh_control.extract_watermarks"
                                  ).fetchall())
        assert marks["pings"] == mark[0] and marks["twins"] is None
        runs = conn.execute("SELECT table_name, status, error_message FROM dwh_control.extract_runs "
                            "ORDER BY run_id").fetchall()
        # the refused runs are marked failed, with the reason, by the run that failed (not left `extracting`
        # for the next run to clean up)
        assert [(r[0], r[1]) for r in runs] == [("pings", "loaded"), ("pings", "failed"), ("twins", "failed")], runs
        assert all(r[2] and "not unique" in r[2] for r in runs[1:]), runs


@pytest.fixture
def nostats_pipeline(pg_admin_dsn: str, tmp_path: Path, new_database: Any) -> Iterator[Pipeline]:
    """Like `pipeline`, but the source login is not granted pg_read_all_stats."""
    pipe, roles = make_pipeline(pg_admin_dsn, tmp_path, new_database, stats=False)
    yield pipe
    drop_pipeline(pg_admin_dsn, pipe, roles)


def test_source_login_without_pg_read_all_stats(nostats_pipeline: Pipeline) -> None:
    pipe = nostats_pipeline
    reader = conninfo_to_dict(pipe.source_dsn)["user"]
    with pipe.src() as conn:
        conn.execute(THINGS)
    pipe.write_config(THINGS_TABLE)
    proc = pipe.cli("migrate")
    assert_clean_failure(proc, "GRANT pg_read_all_stats", str(reader), "lookback")
    time.sleep(0.15)
    with pipe.wh() as conn:  # the rejected table left nothing behind: no bronze table, no watermark row
        assert conn.execute("SELECT to_regclass('bronze.things')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM dwh_control.extract_watermarks").fetchone() == (0,)
    proc = pipe.cli("run")
    assert proc.returncode == 1
    assert "run `bronzeline migrate`" in proc.stderr and "Traceback" not in proc.stderr

    # with a lookback the table runs: the window re-reads 10 minutes below the watermark
    pipe.write_config(THINGS_TABLE + "    lookback: 10 minutes\n")
    pipe.cli("migrate", check=True)
    out = pipe.cli("run", check=True).stdout
    assert "things: loaded 20 of 20 rows" in out
    with pipe.src() as s, pipe.wh() as w:
        assert table_digest(s, "tracksolid.things") == table_digest(w, "bronze.things")
    with pipe.src() as conn:
        conn.execute("INSERT INTO tracksolid.things (id, label) VALUES (21, 'late')")
    time.sleep(0.15)
    out = pipe.cli("run", check=True).stdout
    assert "things: loaded 1 of 21 rows (20 already present)" in out


def test_missing_postgis_in_the_warehouse(pipeline: Pipeline, new_database: Any) -> None:
    # a warehouse database without PostGIS, for the same non-superuser owner
    bare = new_database(postgis=False)
    owner = conninfo_to_dict(pipeline.warehouse_dsn)["user"]
    with psycopg.connect(bare, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(str(conninfo_to_dict(bare)["dbname"])), sql.Identifier(str(owner))))
    pipeline.warehouse_admin = bare
    pipeline.warehouse_dsn = dsn_for(bare, user=str(owner), password=pipeline.password)

    with pipeline.src() as conn:
        conn.execute(THINGS)
        conn.execute("CREATE TABLE tracksolid.spots (id int PRIMARY KEY, geom geometry(Point, 4326), "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config(THINGS_TABLE + "  - {name: spots, from: tracksolid.spots, watermark: recorded_at, "
                                         "key: [id], geometry: [geom]}\n")
    proc = pipeline.cli("migrate")
    assert_clean_failure(proc, "spots", "CREATE EXTENSION postgis")
    with pipeline.wh() as conn:
        # the table without geometry was still set up; the geometry one was not
        assert conn.execute("SELECT to_regclass('bronze.things') IS NOT NULL, "
                            "to_regclass('bronze.spots') IS NULL").fetchone() == (True, True)


def test_run_and_status_before_migrate_say_so(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.t (id int PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now())")
    pipeline.write_config("  - name: t\n    from: tracksolid.t\n    watermark: recorded_at\n    key: [id]\n")
    for args in (("run",), ("status",), ("status", "--json")):
        proc = pipeline.cli(*args)
        assert_clean_failure(proc, "run `bronzeline migrate`")


def test_a_dead_source_fails_its_other_tables_at_once(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        for name in ("a", "b", "c"):
            conn.execute(f"CREATE TABLE tracksolid.{name} (id int PRIMARY KEY, "
                         "recorded_at timestamptz NOT NULL DEFAULT now())")
    tables = "".join(f"  - name: {n}\n    from: tracksolid.{n}\n    watermark: recorded_at\n    key: [id]\n"
                     for n in ("a", "b", "c"))
    pipeline.write_config(tables, extra_yaml="retries: {attempts: 3, backoff_seconds: 1}\n")
    pipeline.cli("migrate", check=True)
    pipeline.source_dsn = dsn_for(pipeline.source_dsn, port="1")  # nothing listens there
    started = time.monotonic()
    proc = pipeline.cli("run")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("attempt 1 of 3 failed") == 1  # only the first table waits and retries
    assert "error: b: not run: source 'source' did not answer a's 3 attempt(s)" in proc.stderr
    assert "error: c: not run" in proc.stderr
    assert elapsed < 8, elapsed  # one table's backoff (1 s + 2 s with jitter), not three
    with pipeline.wh() as conn:
        failed = conn.execute("SELECT table_name, count(*) FROM dwh_control.extract_runs WHERE status = 'failed' "
                              "GROUP BY 1 ORDER BY 1").fetchall()
    assert failed == [("a", 3), ("b", 1), ("c", 1)]  # every table's failure is in the history
    assert pipeline.password not in proc.stderr + proc.stdout
