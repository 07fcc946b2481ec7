"""Dagster `Definitions` from `bronzeline plan`: one asset per table (key `<bronze schema>/<table>`, group
= its source connection) and per model (key `<schema>/<name>`, group = its schema), the plan's
dependencies as asset dependencies, the plan's checks as asset checks (error severity = blocking), and
one schedule per distinct cron in the config's time zone. What each asset runs is in execute.py.

Chunk units are not assets: a table asset runs the table as `bronzeline run` does, chunked first load
included; task-per-unit orchestrators (the Airflow example) run the chunk units as tasks of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from bronzeline.config import load_config
from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.integrations.dagster.execute import CheckRef, Event, Step, materialize_model, materialize_table
from bronzeline.plan import Plan, Unit, build_plan

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")


def dagster_name(text: str) -> str:
    """Dagster's names are letters, digits and underscores: `not_null(km)` -> `not_null_km`."""
    return _NOT_NAME.sub("_", text).strip("_") or "_"


def asset_key(plan_unit: Unit, config: Config) -> dg.AssetKey:
    if plan_unit.kind == "table":
        return dg.AssetKey([config.warehouse.bronze_schema, plan_unit.table or ""])
    schema, name = (plan_unit.relation or "").split(".", 1)
    return dg.AssetKey([schema, name])


def build_definitions(config_path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                      step_retries: int = 1) -> dg.Definitions:
    """Definitions for the config at `config_path` (else $BRONZELINE_CONFIG, else ./bronzeline.yml).
    `step_retries`: how many times Dagster retries a step whose failure is still transient after
    bronzeline's own attempts (see execute.py)."""
    config = load_config(config_path, env)
    return definitions_from_plan(config, build_plan(config), step_retries=step_retries)


def definitions_from_plan(config: Config, plan: Plan, *, step_retries: int = 1) -> dg.Definitions:
    step = Step(config, step_retries)
    keys = {u.id: asset_key(u, config) for u in plan.of_kind("table", "model")}
    checks = _check_refs(plan, keys)
    assets = []
    for unit in plan.of_kind("table", "model"):
        assets.append(_asset(step, unit, keys, checks.get(unit.id, []), plan))
    jobs, schedules = _schedules(config, plan, keys)
    everything = dg.define_asset_job(f"{dagster_name(config.project)}_all", selection=dg.AssetSelection.all(),
                                     description="every table and model of the config, with their checks")
    return dg.Definitions(assets=assets, jobs=[everything, *jobs], schedules=schedules)


def _check_refs(plan: Plan, keys: dict[str, dg.AssetKey]) -> dict[str, list[CheckRef]]:
    """asset unit id -> its checks. Checks on bronze tables bronzeline does not load have no asset."""
    found: dict[str, list[CheckRef]] = {}
    for unit in plan.of_kind("check"):
        owner = next((d for d in unit.deps if d in keys), None)
        if owner is None:
            continue
        taken = {c.name for c in found.get(owner, [])}
        name = base = dagster_name(unit.check or "")
        n = 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        found.setdefault(owner, []).append(CheckRef(unit, name, keys[owner]))
    return found


def _asset_deps(unit: Unit, plan: Plan, keys: dict[str, dg.AssetKey]) -> list[dg.AssetKey]:
    """The plan's deps as assets: chunk units fold into their table, a check into what it checks."""
    found: list[dg.AssetKey] = []
    for dep in unit.deps:
        target = plan.unit(dep)
        owner = dep if dep in keys else next((d for d in target.deps if d in keys), None)
        if owner is not None and owner != unit.id and keys[owner] not in found:
            found.append(keys[owner])
    return found


def _asset(step: Step, unit: Unit, keys: dict[str, dg.AssetKey], checks: Sequence[CheckRef],
           plan: Plan) -> dg.AssetsDefinition:
    key = keys[unit.id]
    specs = [dg.AssetCheckSpec(c.name, asset=key, blocking=c.unit.blocking,
                               description=f"{c.unit.check} ({c.unit.severity}): `{' '.join(c.unit.command[-2:])}`")
             for c in checks]
    common: dict[str, Any] = {
        "key": key, "deps": _asset_deps(unit, plan, keys), "group_name": dagster_name(unit.group),
        "check_specs": specs, "metadata": {"bronzeline_unit": unit.id, "command": " ".join(unit.command)},
        "kinds": {"postgres"}}
    if unit.kind == "table":
        relation = f"{step.config.warehouse.bronze_schema}.{unit.table}"

        def table_asset(context: AssetExecutionContext) -> Iterator[Event]:
            yield from materialize_table(step, unit, relation, checks, context)

        return _as_asset(table_asset, description=f"bronze table {relation}: `bronzeline run {unit.table}`", **common)

    def model_asset(context: AssetExecutionContext) -> Iterator[Event]:
        yield from materialize_model(step, unit, checks, context)

    return _as_asset(model_asset, description=f"{unit.materialized} model {unit.relation}: "
                                              f"`bronzeline build {unit.relation}`", **common)


def _as_asset(fn: Callable[[AssetExecutionContext], Iterator[Event]], **options: Any) -> dg.AssetsDefinition:
    # Dagster compares the annotations' objects, and this module's annotations are text (PEP 563).
    fn.__annotations__ = {"context": AssetExecutionContext}
    # output_required=False: a skipped run (lock held) or an unpublished model materializes nothing
    made: dg.AssetsDefinition = dg.asset(output_required=False, **options)(fn)
    return made


def _schedules(config: Config, plan: Plan, keys: dict[str, dg.AssetKey],
               ) -> tuple[list[Any], list[dg.ScheduleDefinition]]:
    """One job and one schedule per distinct cron (schedule.cron and each tables[].cron), in `timezone`."""
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    for n, cron in enumerate(plan.crons(), start=1):
        if len(cron.split()) != 5:
            raise ConfigError(f"cron {cron!r} has a seconds field; Dagster schedules take five fields (minute "
                              "hour day month weekday): change it, or leave this table to `bronzeline schedule`")
        selected = [keys[u.id] for u in plan.of_kind("table", "model") if u.cron == cron]
        name = f"{dagster_name(config.project)}_cron_{n}"
        job = dg.define_asset_job(name, selection=dg.AssetSelection.assets(*selected),
                                  description=f"the tables and models on cron {cron!r} ({config.timezone})")
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(name=f"{name}_schedule", job=job, cron_schedule=cron,
                                               execution_timezone=config.timezone,
                                               description=f"{cron} in {config.timezone}"))
    return jobs, schedules
