"""`bronzeline plan`: units, dependencies, commands, crons and groups from configs with tables, chunks,
models and checks — no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bronzeline.config import load_config
from bronzeline.config.models import TableConfig
from bronzeline.plan import Plan, build_plan
from tests.cli import invoke

ENV = {"SOURCE_DSN": "host=localhost dbname=src", "CRM_DSN": "host=localhost dbname=crm",
       "WAREHOUSE_DSN": "host=localhost dbname=wh"}
CONFIG = """
project: fleet
timezone: Africa/Nairobi
connections:
  source: {dsn: "${SOURCE_DSN}"}
  crm: {dsn: "${CRM_DSN}"}
  warehouse: {dsn: "${WAREHOUSE_DSN}"}
blob: {url: file://./blob}
schedule: {cron: "0 5 * * *"}
models: {path: models}
tables:
  - {name: positions, from: tracksolid.positions, watermark: recorded_at, key: [id], chunks: 3}
  - {name: devices, from: tracksolid.devices, mode: snapshot, key: [imei], cron: "*/15 * * * *"}
  - {name: customers, source: crm, from: crm.customers, watermark: updated_at, key: [id], chunk_rows: 1000}
"""
MODELS = {
    "silver/fast.sql": "SELECT p.id, d.imei FROM bronze.positions p JOIN bronze.devices d USING (imei)",
    "silver/clients.sql": "SELECT id FROM bronze.customers",
    "gold/daily.sql": "WITH f AS (SELECT * FROM silver.fast) SELECT imei, count(*) AS n FROM f GROUP BY 1",
    "gold/report.sql": "SELECT g.imei, c.id FROM gold.daily g CROSS JOIN silver.clients c",
}
PROPERTIES = """
models:
  - name: silver.fast
    data_tests:
      - row_count: {min: 1}
      - expression_is_true: {expression: "id > 0", severity: warn}
    columns:
      - name: imei
        data_tests: [not_null, unique]
  - name: gold.daily
    columns:
      - name: n
        data_tests: [{accepted_range: {min_value: 0, severity: warn}}]
sources:
  - name: bronze.devices
    columns:
      - name: imei
        data_tests: [not_null]
"""


def write(tmp: Path, config: str = CONFIG, models: dict[str, str] | None = None,
          properties: str = PROPERTIES) -> Path:
    for name, text in (MODELS if models is None else models).items():
        (tmp / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "models" / name).write_text(text)
    (tmp / "models").mkdir(exist_ok=True)
    (tmp / "models" / "properties.yml").write_text(properties)
    path = tmp / "bronzeline.yml"
    path.write_text(config)
    return path


def plan_of(tmp: Path, **options: object) -> Plan:
    path = write(tmp)
    return build_plan(load_config(path, ENV), str(path), **options)  # type: ignore[arg-type]


def test_units_commands_crons_and_groups(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    cfg = str(tmp_path / "bronzeline.yml")
    ids = [u.id for u in plan.units]
    assert set(ids) == {
        "table:positions:chunk:1", "table:positions:chunk:2", "table:positions:chunk:3", "table:positions",
        "table:devices", "check:bronze.devices:not_null(imei)", "table:customers",
        "model:silver.fast", "check:silver.fast:row_count", "check:silver.fast:expression_is_true",
        "check:silver.fast:not_null(imei)", "check:silver.fast:unique(imei)", "model:silver.clients",
        "model:gold.daily", "check:gold.daily:accepted_range(n)", "model:gold.report"}
    assert len(ids) == len(set(ids))
    positions = plan.unit("table:positions")
    assert positions.command == ("bronzeline", "-c", cfg, "run", "positions")
    assert positions.deps == ("table:positions:chunk:1", "table:positions:chunk:2", "table:positions:chunk:3")
    assert (positions.cron, positions.group) == ("0 5 * * *", "source")
    chunk = plan.unit("table:positions:chunk:2")
    assert chunk.command == ("bronzeline", "-c", cfg, "run", "positions", "--chunk", "2")
    assert (chunk.kind, chunk.chunk, chunk.deps, chunk.group) == ("chunk", 2, (), "source")
    assert plan.unit("table:devices").cron == "*/15 * * * *"  # its own cron wins
    assert plan.unit("table:customers").group == "crm"
    assert plan.unit("table:customers").deps == ()  # chunk_rows: the count needs the source (no hook given)
    model = plan.unit("model:gold.daily")
    assert model.command == ("bronzeline", "-c", cfg, "build", "gold.daily")
    assert (model.group, model.cron, model.materialized) == ("gold", "0 5 * * *", "view")
    check = plan.unit("check:silver.fast:unique(imei)")
    assert check.command == ("bronzeline", "-c", cfg, "test", "silver.fast")
    assert (check.severity, check.blocking, check.deps, check.group) == ("error", True, ("model:silver.fast",),
                                                                         "silver")
    warn = plan.unit("check:silver.fast:expression_is_true")
    assert (warn.severity, warn.blocking) == ("warn", False)
    source_check = plan.unit("check:bronze.devices:not_null(imei)")
    assert source_check.command == ("bronzeline", "-c", cfg, "test", "bronze.devices")
    assert (source_check.deps, source_check.cron, source_check.group) == (("table:devices",), "*/15 * * * *",
                                                                           "source")
    assert plan.crons() == ["0 5 * * *", "*/15 * * * *"]


def test_model_dependencies_include_tables_models_and_blocking_checks(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    # silver.fast reads two bronze tables; devices has an error check on bronze, which build would block on
    assert set(plan.unit("model:silver.fast").deps) == {"table:positions", "table:devices",
                                                         "check:bronze.devices:not_null(imei)"}
    # gold.daily reads silver.fast (through a CTE): the model and its error checks, not its warn check
    assert set(plan.unit("model:gold.daily").deps) == {"model:silver.fast", "check:silver.fast:row_count",
                                                        "check:silver.fast:not_null(imei)",
                                                        "check:silver.fast:unique(imei)"}
    # a warn check blocks nothing: gold.report waits for gold.daily only, not its warn check
    assert set(plan.unit("model:gold.report").deps) == {"model:gold.daily", "model:silver.clients"}
    assert plan.unit("model:silver.clients").deps == ("table:customers",)


def test_order_is_a_topological_order_and_stable(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    seen: set[str] = set()
    for unit in plan.units:
        assert set(unit.deps) <= seen, f"{unit.id} comes before {set(unit.deps) - seen}"
        seen.add(unit.id)
    again = build_plan(load_config(tmp_path / "bronzeline.yml", ENV), str(tmp_path / "bronzeline.yml"))
    assert [u.id for u in again.units] == [u.id for u in plan.units]
    assert [u.id for u in plan.units][:4] == ["table:positions:chunk:1", "table:positions:chunk:2",
                                             "table:positions:chunk:3", "table:positions"]


def test_chunk_count_hook_for_chunk_rows_tables(tmp_path: Path) -> None:
    asked: list[str] = []

    def count(table: TableConfig) -> int | None:
        asked.append(table.name)
        return 2

    plan = plan_of(tmp_path, chunk_count=count)
    assert asked == ["customers"]  # `chunks: N` tables need no hook
    assert plan.unit("table:customers").deps == ("table:customers:chunk:1", "table:customers:chunk:2")


def test_without_models_or_config_path(tmp_path: Path) -> None:
    path = tmp_path / "bronzeline.yml"
    path.write_text(CONFIG.replace("models: {path: models}\n", "").replace("schedule: {cron: \"0 5 * * *\"}\n", ""))
    plan = build_plan(load_config(path, ENV))
    assert [u.kind for u in plan.units].count("model") == 0
    assert plan.unit("table:customers").command == ("bronzeline", "run", "customers")  # $BRONZELINE_CONFIG
    assert plan.unit("table:positions").cron is None


def test_duplicate_check_names_stay_distinct(tmp_path: Path) -> None:
    properties = PROPERTIES.replace("      - row_count: {min: 1}\n",
                                    "      - expression_is_true: {expression: \"id > 1\"}\n")
    path = write(tmp_path, properties=properties)
    plan = build_plan(load_config(path, ENV), str(path))
    names = [u.check for u in plan.checks_of("silver.fast")]
    assert names == ["not_null(imei)", "unique(imei)", "expression_is_true", "expression_is_true#2"]


def test_cli_plan_json_and_text(tmp_path: Path) -> None:
    write(tmp_path)
    result = invoke(tmp_path, "-c", "bronzeline.yml", "plan", "--json", env=ENV)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["project"], data["timezone"]) == ("fleet", "Africa/Nairobi")
    by_id = {u["id"]: u for u in data["units"]}
    cfg = str((tmp_path / "bronzeline.yml").resolve())  # absolute: a task may run from any folder
    assert by_id["table:devices"] == {"id": "table:devices", "kind": "table",
                                      "command": ["bronzeline", "-c", cfg, "run", "devices"], "deps": [],
                                      "cron": "*/15 * * * *", "group": "source", "table": "devices"}
    assert by_id["check:silver.fast:row_count"]["blocking"] is True
    # `customers` has chunk_rows: and its source does not answer: no chunk units, one line saying so
    assert by_id["table:customers"]["deps"] == [] and not any(i.startswith("table:customers:chunk") for i in by_id)
    assert "plan: customers: chunks not listed" in result.stderr
    text = invoke(tmp_path, "-c", "bronzeline.yml", "plan", env=ENV)
    assert text.returncode == 0, text.stderr
    assert f"$ bronzeline -c {cfg} build gold.report" in text.stdout
    assert text.stdout.index("model:silver.fast") < text.stdout.index("model:gold.daily")


def test_a_model_cycle_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, models={"silver/a.sql": "SELECT * FROM silver.b", "silver/b.sql": "SELECT * FROM silver.a"},
          properties="")
    result = invoke(tmp_path, "-c", "bronzeline.yml", "plan", env=ENV)
    assert result.returncode == 1
    assert result.stderr.startswith("error: the models form a cycle"), result.stderr


@pytest.mark.parametrize("name", ["bronze.devices", "silver.fast"])
def test_a_check_units_command_selects_something_test_accepts(tmp_path: Path, name: str) -> None:
    """`test bronze.<table>` selects that table's checks (no database reached before the selection)."""
    from bronzeline.models.build import _select
    from bronzeline.models.project import load_project

    config = load_config(write(tmp_path), ENV)
    models, tables = _select(load_project(config), [name], config)
    assert (models, tables) == (({name}, set()) if name.startswith("silver") else (set(), {name}))
