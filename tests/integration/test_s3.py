"""The pipeline on an S3-compatible store (a real moto server on loopback): the core scenario, crash
safety at every step, atomic uploads, verified moves, credentials only from ${VAR} or the environment."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from bronzeline.config.models import BlobConfig
from bronzeline.context import Context
from bronzeline.errors import ConfigError, StoreError
from bronzeline.faults import POINTS
from bronzeline.pipeline.attempts import classify
from bronzeline.provision import migrate as run_migrate
from bronzeline.store import open_store
from bronzeline.store.s3 import S3Store
from tests.integration.pipeline import Pipeline
from tests.integration.s3server import KEY_ID, REGION, SECRET, S3Server, s3_server
from tests.integration.test_core import (
    TABLES,
    assert_parity,
    inserts_updates_deletes_reach_bronze,
    setup,
)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@dataclass
class S3Pipeline(Pipeline):
    """A Pipeline whose blob is s3://<bucket>/wh, credentials through ${VAR} in the blob: keys."""

    s3: S3Server | None = None
    bucket: str = ""
    blob_yaml: str = ""

    def write_config(self, tables_yaml: str, extra_yaml: str = "") -> Path:
        self.tables_yaml, self.extra_yaml = tables_yaml, extra_yaml
        blob = self.blob_yaml or (
            f"  url: s3://{self.bucket}/wh\n"
            "  endpoint_url: \"${S3_ENDPOINT}\"\n"
            f"  region: {REGION}\n"
            "  access_key_id: \"${S3_KEY_ID}\"\n"
            "  secret_access_key: \"${S3_SECRET}\"\n")
        self.config_path.write_text(
            "project: fleet\ntimezone: Africa/Nairobi\nconnections:\n"
            "  source: {dsn: \"${SOURCE_DSN}\"}\n  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
            f"blob:\n{blob}{extra_yaml}tables:\n{tables_yaml}")
        return self.config_path

    def files(self, folder: str, table: str) -> list[str]:
        assert self.s3 is not None
        prefix = f"wh/fleet/{folder}/{table}/"
        return [k[len(prefix):] for k in self.s3.keys(self.bucket, prefix)]

    def read(self, folder: str, table: str, name: str) -> bytes:
        assert self.s3 is not None
        body = self.s3.client().get_object(Bucket=self.bucket, Key=f"wh/fleet/{folder}/{table}/{name}")["Body"]
        return bytes(body.read())


def on_s3(pipeline: Pipeline, s3: S3Server) -> S3Pipeline:
    pipe = S3Pipeline(**{f.name: getattr(pipeline, f.name) for f in fields(pipeline)}, s3=s3, bucket=s3.new_bucket())
    pipe.env.update(s3.env())
    return pipe


def migrate(pipe: Pipeline) -> None:
    """In this process (a subprocess costs a second of imports; the CLI is tested elsewhere)."""
    with Context(pipe.config()) as ctx:
        run_migrate(ctx)


def test_core_scenario_on_s3(pipeline: Pipeline, s3: S3Server) -> None:
    pipe = on_s3(pipeline, s3)
    setup(pipe)
    migrate(pipe)
    first = pipe.cli("run", check=True)
    assert_parity(pipe)
    processed = pipe.files("processed", "position_history")
    assert len(processed) == 2 and processed[0].endswith(".csv.gz") and "_EAT_" in processed[0]
    assert pipe.files("exports", "position_history") == []
    manifest = json.loads(pipe.read("processed", "position_history", processed[1]))
    assert manifest["rows"] == 500 and len(manifest["sha256"]) == 64

    out = inserts_updates_deletes_reach_bronze(pipe)
    assert len(pipe.files("processed", "position_history")) == 4
    with pipe.wh() as conn:
        runs = conn.execute("SELECT status, rows_extracted, rows_loaded, rows_skipped, csv_path, attempts "
                            "FROM dwh_control.extract_runs ORDER BY run_id").fetchall()
    assert [r[0] for r in runs] == ["loaded"] * 4 and all(r[1] == r[2] + r[3] for r in runs)
    assert all(r[4].startswith(f"s3://{pipe.bucket}/wh/fleet/exports/") for r in runs)
    assert all(r[5] == 1 for r in runs)
    # the secret is nowhere in what bronzeline printed or stored
    assert SECRET not in first.stdout + first.stderr + out
    assert all(SECRET not in str(r) for r in runs)


@pytest.mark.parametrize("point", ["extract", "uploaded", "moving"])
def test_sigkill_at_each_step_on_s3(pipeline: Pipeline, s3: S3Server, point: str) -> None:
    assert point in POINTS
    pipe = on_s3(pipeline, s3)
    setup(pipe, rows=1000)
    migrate(pipe)
    assert pipe.run("devices")[0].status == "loaded"
    killed = pipe.cli("run", "position_history", env={"BRONZELINE_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = pipe.files("exports", "position_history")
    if point == "extract":  # the upload never completed: nothing is visible under any name
        assert left == []
    elif point in ("uploaded", "load"):
        assert any(n.endswith(".manifest.json") for n in left)
    time.sleep(0.15)
    assert [o.status for o in pipe.run()] == ["loaded", "loaded"]
    assert pipe.files("exports", "position_history") == []
    assert_parity(pipe)
    with pipe.wh() as conn:
        runs = conn.execute("SELECT status, rows_loaded FROM dwh_control.extract_runs "
                            "WHERE table_name = 'position_history' ORDER BY run_id").fetchall()
    assert {r[0] for r in runs} <= {"loaded", "failed"}
    assert sum(r[1] for r in runs if r[0] == "loaded") == 1000


def test_credentials_from_the_aws_environment(pipeline: Pipeline, s3: S3Server) -> None:
    pipe = on_s3(pipeline, s3)
    pipe.blob_yaml = f"  url: s3://{pipe.bucket}/wh\n"
    pipe.env.update({"AWS_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                     "AWS_DEFAULT_REGION": REGION})
    setup(pipe, rows=50)
    migrate(pipe)
    pipe.cli("run", check=True)
    assert_parity(pipe)
    assert len(pipe.files("processed", "position_history")) == 2


def test_a_literal_secret_or_a_missing_bucket_is_refused(pipeline: Pipeline, s3: S3Server) -> None:
    pipe = on_s3(pipeline, s3)
    pipe.blob_yaml = (f"  url: s3://{pipe.bucket}/wh\n  endpoint_url: \"${{S3_ENDPOINT}}\"\n"
                      f"  secret_access_key: {SECRET}\n")
    setup(pipe, rows=5)
    with pytest.raises(ConfigError) as refused:
        pipe.config()
    assert "secret_access_key" in str(refused.value) and SECRET not in str(refused.value)
    pipe.blob_yaml = ""
    pipe.bucket = "bl-no-such-bucket"
    pipe.write_config(TABLES)
    migrate(pipe)
    [outcome] = pipe.run("position_history")
    assert outcome.status == "failed" and outcome.attempts == 1  # a missing bucket is not retried
    assert "bucket 'bl-no-such-bucket'" in outcome.message and "does not exist" in outcome.message


def _store(s3: S3Server, bucket: str) -> S3Store:
    blob = BlobConfig(url=f"s3://{bucket}/wh", endpoint_url=s3.url, region=REGION, access_key_id=KEY_ID,
                      secret_access_key=SECRET)
    store = open_store(blob, Path("."), "p")
    assert isinstance(store, S3Store)
    return store


@pytest.mark.parametrize("size", [1000, 6 << 20])  # one PUT, and a multipart upload
def test_a_failed_upload_leaves_nothing_visible(s3: S3Server, size: int) -> None:
    bucket = s3.new_bucket()
    store = _store(s3, bucket)
    with pytest.raises(RuntimeError), store.open_write("exports/t/a.csv.gz") as handle:
        handle.write(b"x" * size)
        handle.write(b"y" * 1000)
        raise RuntimeError("the source broke mid-extract")
    assert s3.keys(bucket) == []
    assert s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, not completed
    with store.open_write("exports/t/a.csv.gz") as handle:
        handle.write(b"z" * size)
    assert s3.keys(bucket) == ["wh/p/exports/t/a.csv.gz"] and store.size("exports/t/a.csv.gz") == size


def test_move_copies_and_verifies_then_deletes(s3: S3Server) -> None:
    bucket = s3.new_bucket()
    store = _store(s3, bucket)
    payload = bytes(range(256)) * ((6 << 20) // 256 + 7)  # multipart: its ETag is not an MD5
    with store.open_write("exports/t/b.csv.gz") as handle:
        handle.write(payload)
    store.copy("exports/t/b.csv.gz", "processed/t/b.csv.gz")
    assert store.checksum("processed/t/b.csv.gz") == store.checksum("exports/t/b.csv.gz")
    assert store.list("processed/t") == ["processed/t/b.csv.gz"]
    store.delete("exports/t/b.csv.gz")
    assert store.list("exports/t") == [] and store.size("processed/t/b.csv.gz") == len(payload)


def test_an_unreachable_store_is_a_store_error(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries, read from the standard variable
    bucket = s3.new_bucket()
    store = _store(s3, bucket)
    s3.proxy.down()
    try:
        with pytest.raises(StoreError) as caught:
            store.list("exports/t")
        assert "object store" in str(caught.value) and SECRET not in str(caught.value)
        assert classify(caught.value) == "transient"
    finally:
        s3.proxy.up()
    assert store.list("exports/t") == []
