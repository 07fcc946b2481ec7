"""The Airflow example (examples/airflow/bronzeline_dag.py), without Airflow (too heavy for CI): its task
graph against `bronzeline plan --json` — one task per unit, the unit's own command, the plan's
dependencies, valid Airflow task ids, per-cron DAGs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.cli import invoke
from tests.unit.test_plan import ENV, write

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "airflow" / "bronzeline_dag.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bronzeline_dag", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no Airflow here: defines the functions, builds no DAG
    return module


def plan_json(tmp: Path) -> dict[str, Any]:
    write(tmp)
    result = invoke(tmp, "-c", "bronzeline.yml", "plan", "--json", env=ENV)
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def test_one_task_per_unit_with_its_command_and_dependencies(tmp_path: Path) -> None:
    dag = example()
    plan = plan_json(tmp_path)
    tasks = dag.tasks_from_plan(plan)
    assert len(tasks) == len(plan["units"])
    for unit in plan["units"]:
        argv, upstream = tasks[dag.task_id(unit["id"])]
        assert argv == unit["command"]
        assert upstream == [dag.task_id(d) for d in unit["deps"]]
    assert all(re.fullmatch(r"[\w.-]+", t) for t in tasks)  # Airflow's rule for task ids
    assert set(tasks["model__gold.daily"][1]) == {"model__silver.fast", "check__silver.fast__row_count",
                                                  "check__silver.fast__not_null_imei",
                                                  "check__silver.fast__unique_imei"}
    assert tasks["table__positions"][1] == [f"table__positions__chunk__{k}" for k in (1, 2, 3)]
    # acyclic, every upstream a task
    done: set[str] = set()
    while len(done) < len(tasks):
        ready = [t for t, (_, ups) in tasks.items() if t not in done and set(ups) <= done]
        assert ready, f"a cycle among {set(tasks) - done}"
        done.update(ready)


def test_one_dag_per_cron_keeps_its_own_units(tmp_path: Path) -> None:
    dag = example()
    plan = plan_json(tmp_path)
    every_15 = dag.tasks_from_plan(plan, {"*/15 * * * *"})
    assert set(every_15) == {"table__devices", "check__bronze.devices__not_null_imei"}
    daily = dag.tasks_from_plan(plan, {"0 5 * * *"})
    # silver.fast reads devices, which runs on its own cron: that dependency is the other DAG's
    assert daily["model__silver.fast"][1] == ["table__positions"]
    assert set(every_15) | set(daily) == set(dag.tasks_from_plan(plan))
