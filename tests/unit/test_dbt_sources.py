"""`bronzeline dbt-sources`: the dbt sources.yml written from the config, with no database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from bronzeline.cli import cli
from bronzeline.config import load_config
from bronzeline.dbt_sources import dbt_period, dbt_sources, dbt_sources_yaml
from bronzeline.fleet import reference_config_text

ENV = {"SOURCE_DSN": "host=127.0.0.1 dbname=fleet", "WAREHOUSE_DSN": "host=127.0.0.1 dbname=dwh"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bronzeline.yml"
    path.write_text(text, encoding="utf-8")
    return path


def tables_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (source,) = document["sources"]
    return {t["name"]: t for t in source["tables"]}


def test_the_reference_project_gets_one_source_with_every_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, reference_config_text(False)), ENV)
    document = yaml.safe_load(dbt_sources_yaml(config))
    assert document["version"] == 2
    (source,) = document["sources"]
    assert (source["name"], source["schema"]) == ("fleet", "bronze")
    tables = tables_of(document)
    assert list(tables) == [t.name for t in config.tables]
    # seven runs a day, 05:00 to 23:00: the longest gap is the night's six hours
    six, twelve = {"count": 6, "period": "hour"}, {"count": 12, "period": "hour"}
    for table in config.tables:
        entry = tables[table.name]["config"]
        assert entry["freshness"] == {"warn_after": six, "error_after": twelve}, table.name
        if table.mode == "incremental":
            assert entry["loaded_at_field"] == table.watermark == "recorded_at"
            assert "loaded_at_query" not in entry
        else:
            assert "loaded_at_field" not in entry
            assert entry["loaded_at_query"] == ("SELECT max(run_finished_at) FROM dwh_control.extract_runs "
                                                f"WHERE table_name = '{table.name}' AND status = 'loaded'")
    assert tables["devices"]["columns"] == [{"name": "imei", "data_tests": ["not_null", "unique"]}]


def test_cadence_comes_from_the_table_cron_else_a_day(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
project: ops
connections: {source: {dsn: "${SOURCE_DSN}"}, warehouse: {dsn: "${WAREHOUSE_DSN}"}}
blob: {url: "file://./blob"}
warehouse: {bronze_schema: raw, control_schema: Ctl}
tables:
  - {name: calls, from: app.calls, watermark: inserted_at, key: [tenant, id], cron: "*/15 * * * *"}
  - {name: tenants, from: app.tenants, mode: snapshot, key: [id]}
"""), ENV)
    document = dbt_sources(config)
    assert document["sources"][0]["schema"] == "raw"
    tables = tables_of(document)
    assert tables["calls"]["config"] == {
        "loaded_at_field": "inserted_at",
        "freshness": {"warn_after": {"count": 15, "period": "minute"},
                      "error_after": {"count": 30, "period": "minute"}}}
    assert "columns" not in tables["calls"]  # a composite key: dbt core has no test for it
    assert tables["tenants"]["config"]["freshness"] == {"warn_after": {"count": 1, "period": "day"},
                                                        "error_after": {"count": 2, "period": "day"}}
    assert '"Ctl".extract_runs' in tables["tenants"]["config"]["loaded_at_query"]


def test_dbt_period_never_makes_a_limit_stricter() -> None:
    assert dbt_period(timedelta(days=2)) == {"count": 2, "period": "day"}
    assert dbt_period(timedelta(hours=36)) == {"count": 36, "period": "hour"}
    assert dbt_period(timedelta(minutes=90)) == {"count": 90, "period": "minute"}
    assert dbt_period(timedelta(seconds=90)) == {"count": 2, "period": "minute"}
    assert dbt_period(timedelta(seconds=5)) == {"count": 1, "period": "minute"}


def test_the_command_prints_or_writes_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, reference_config_text(True))
    runner = CliRunner()
    printed = runner.invoke(cli, ["-c", str(path), "dbt-sources"], env=ENV)
    assert printed.exit_code == 0, printed.output
    assert yaml.safe_load(printed.output)["sources"][0]["name"] == "fleet"
    target = tmp_path / "dbt" / "sources.yml"
    target.parent.mkdir()
    written = runner.invoke(cli, ["-c", str(path), "dbt-sources", "--output", str(target)], env=ENV)
    assert written.exit_code == 0, written.output
    assert target.read_text() == printed.output
    missing = runner.invoke(cli, ["-c", str(path), "dbt-sources", "-o", str(tmp_path / "nowhere" / "s.yml")],
                            env=ENV)
    assert missing.exit_code == 1 and "cannot write" in missing.output
