"""Airflow DAGs from `bronzeline plan --json`: one task per plan unit (table runs and first-load chunks,
model builds, checks), with the plan's dependencies, one DAG per distinct cron in the config's time zone.

Copy this file into your DAGs folder. The Airflow workers need bronzeline installed and the same
config file; set, in the environment of the scheduler and the workers:

    BRONZELINE_CONFIG=/etc/bronzeline/bronzeline.yml   # the config file
    SOURCE_DSN=…  WAREHOUSE_DSN=…                      # whatever ${VAR}s the config names (secrets)
    BRONZELINE_BIN=bronzeline                          # optional: the command, if not on PATH

The plan is read when the scheduler parses this file (`bronzeline plan --json` reads the config and the
models' SQL; it needs no database). Each task runs the unit's own command, e.g. `bronzeline -c … run
positions`: every guarantee (the per-table lock, the ledger, batch files, retries of transient failures)
is bronzeline's, not Airflow's. A run that finds the table's lock held by another run skips it and exits
0 (not a failure); a failed error check fails its `test`/`build` task, so Airflow runs nothing downstream.

Airflow itself is not installed by bronzeline's test suite (it is too heavy for CI): the suite imports
this file without Airflow and checks `tasks_from_plan` against `bronzeline plan --json`. Written for
Airflow 2.4+ (`schedule=`) and 3.x (the standard provider's BashOperator).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
from typing import Any

Tasks = dict[str, tuple[list[str], list[str]]]  # task id -> (argv, upstream task ids)


def task_id(unit_id: str) -> str:
    """Airflow task ids are letters, digits, `_`, `-` and `.`: `check:silver.trips:not_null(km)` ->
    `check__silver.trips__not_null_km`."""
    return re.sub(r"[^\w.-]", "_", unit_id.replace(":", "__")).strip("_")


def tasks_from_plan(plan: dict[str, Any], crons: set[str | None] | None = None) -> Tasks:
    """The plan as tasks: every unit (or, with `crons`, the units on those crons — None for units
    without one; a dependency on a unit of another cron is left to that cron's DAG), its argv, and its
    upstream task ids."""
    units = [u for u in plan["units"] if crons is None or u.get("cron") in crons]
    ids = {u["id"]: task_id(u["id"]) for u in units}
    if len(set(ids.values())) != len(ids):
        raise ValueError("two plan units map to one Airflow task id")
    return {ids[u["id"]]: (list(u["command"]), [ids[d] for d in u["deps"] if d in ids]) for u in units}


def read_plan(config: str | None = None) -> dict[str, Any]:
    """`bronzeline plan --json` for `config` (default $BRONZELINE_CONFIG)."""
    command = [os.environ.get("BRONZELINE_BIN", "bronzeline")]
    if config or os.environ.get("BRONZELINE_CONFIG"):
        command += ["-c", config or os.environ["BRONZELINE_CONFIG"]]
    done = subprocess.run([*command, "plan", "--json"], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"bronzeline plan failed: {done.stderr.strip()}")
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def build_dags(plan: dict[str, Any]) -> dict[str, Any]:
    """One Airflow DAG per distinct cron of the plan (units without a cron: a DAG run by hand)."""
    import pendulum
    from airflow import DAG

    try:
        from airflow.providers.standard.operators.bash import BashOperator  # Airflow 3
    except ImportError:
        from airflow.operators.bash import BashOperator  # Airflow 2

    crons = list(dict.fromkeys(u.get("cron") for u in plan["units"]))
    dags: dict[str, Any] = {}
    for n, cron in enumerate(crons, start=1):
        name = f"bronzeline_{plan['project']}_{n}" if cron else f"bronzeline_{plan['project']}_manual"
        dag = DAG(dag_id=re.sub(r"[^\w.-]", "_", name), schedule=cron, catchup=False, max_active_runs=1,
                  start_date=pendulum.datetime(2024, 1, 1, tz=plan["timezone"]),
                  description=f"bronzeline plan units on {cron or 'no cron'} ({plan['timezone']})",
                  tags=["bronzeline"])
        tasks = tasks_from_plan(plan, {cron})
        made = {tid: BashOperator(task_id=tid, bash_command=shlex.join(argv), dag=dag, append_env=True)
                for tid, (argv, _) in tasks.items()}
        for tid, (_, upstream) in tasks.items():
            for up in upstream:
                made[up] >> made[tid]
        dags[dag.dag_id] = dag
    return dags


if importlib.util.find_spec("airflow") is not None and os.environ.get("BRONZELINE_CONFIG"):
    # Parsed by Airflow: it finds the DAGs among the module's globals.
    globals().update(build_dags(read_plan()))
