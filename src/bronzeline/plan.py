"""`bronzeline plan`: every unit of work — table runs (and first-load chunks), model builds, checks — with
its dependencies, cadence, group and the exact command that runs it. Orchestrator integrations (the
Dagster definitions, the Airflow example) are built from this graph, so they cannot disagree with it.

No database is needed: the models' SQL is parsed (sqlglot) exactly as `build` parses it.

Dependencies, and why:
- `table:<t>` depends on its `table:<t>:chunk:<k>` units: the watermark advances only when every chunk
  of a chunked first load is in;
- `check:<relation>:<check>` depends on what it checks (`table:<t>` for checks on bronze tables);
- `model:<m>` depends on the models and bronze tables it reads, and on their error-severity checks:
  `build` blocks a model whose upstream failed an error check, so an orchestrator must wait for them.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bronzeline.config.models import Config, TableConfig
from bronzeline.errors import ConfigError
from bronzeline.models.graph import build_order, dependencies
from bronzeline.models.project import load_project
from bronzeline.models.spec import CheckSpec

UnitKind = Literal["table", "chunk", "model", "check"]
ChunkCount = Callable[[TableConfig], int | None]


@dataclass(frozen=True)
class Unit:
    """One unit of work. `command` is argv (no shell); `deps` are unit ids."""

    id: str
    kind: UnitKind
    command: tuple[str, ...]
    deps: tuple[str, ...]
    cron: str | None
    group: str
    table: str | None = None  # table and chunk units: the config's table name
    chunk: int | None = None  # chunk units: 1..N
    relation: str | None = None  # models and checks: schema.name (of the model, or of the bronze table checked)
    check: str | None = None  # check units: the check's name, e.g. not_null(km)
    severity: str | None = None  # check units: error | warn
    materialized: str | None = None  # model units

    @property
    def blocking(self) -> bool:
        """An error-severity check: when it fails, what reads its relation must not run."""
        return self.kind == "check" and self.severity == "error"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "kind": self.kind, "command": list(self.command),
                                "deps": list(self.deps), "cron": self.cron, "group": self.group}
        for name in ("table", "chunk", "relation", "check", "severity", "materialized"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.kind == "check":
            data["blocking"] = self.blocking
        return data


@dataclass
class Plan:
    project: str
    timezone: str
    units: list[Unit] = field(default_factory=list)  # in dependency order

    def unit(self, unit_id: str) -> Unit:
        for unit in self.units:
            if unit.id == unit_id:
                return unit
        raise KeyError(unit_id)

    def of_kind(self, *kinds: UnitKind) -> list[Unit]:
        return [u for u in self.units if u.kind in kinds]

    def checks_of(self, relation: str) -> list[Unit]:
        return [u for u in self.units if u.kind == "check" and u.relation == relation]

    def crons(self) -> list[str]:
        """Each distinct cron expression, in first-seen order."""
        return list(dict.fromkeys(u.cron for u in self.units if u.cron is not None))

    def as_json(self) -> dict[str, Any]:
        return {"project": self.project, "timezone": self.timezone, "units": [u.as_json() for u in self.units]}


def table_unit_id(table: str) -> str:
    return f"table:{table}"


def model_unit_id(relation: str) -> str:
    return f"model:{relation}"


def build_plan(config: Config, config_path: str | None = None, *, program: Sequence[str] = ("bronzeline",),
               chunk_count: ChunkCount | None = None) -> Plan:
    """The plan of `config`. Commands are `program -c config_path …` (without `-c` when `config_path` is
    None: the task then finds the config as the CLI does, from $BRONZELINE_CONFIG). `chunk_count` says
    how many chunks a `chunk_rows` table's first load has (that needs the source); without it such a
    table has no chunk units and its table unit runs the whole first load."""
    base = (*program, *(("-c", config_path) if config_path else ()))
    units: list[Unit] = []
    bronze = config.warehouse.bronze_schema
    project = load_project(config)
    graph = dependencies(project, config)
    order = build_order(project, config, graph)  # a cycle fails the plan before any source is asked
    checks_by_relation: dict[str, list[CheckSpec]] = {r: list(s.checks) for r, s in project.sources.items()}
    for relation, model in project.models.items():
        checks_by_relation[relation] = list(model.checks)
    table_of = {f"{bronze}.{t.name}": t for t in config.tables}
    check_ids: dict[str, list[Unit]] = {}

    def add_checks(relation: str, target: str, cron: str | None, group: str) -> None:
        seen: dict[str, int] = {}
        for spec in checks_by_relation.get(relation, []):
            seen[spec.name] = seen.get(spec.name, 0) + 1
            name = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            unit = Unit(f"check:{relation}:{name}", "check", (*base, "test", relation), (target,) if target else (),
                        cron, group, relation=relation, check=name, severity=spec.severity)
            units.append(unit)
            check_ids.setdefault(relation, []).append(unit)

    for table in config.tables:
        cron = table.cron or config.schedule.cron
        count = table.chunks if table.chunks is not None else (
            chunk_count(table) if chunk_count is not None and table.chunk_rows is not None else None)
        chunks = [Unit(f"table:{table.name}:chunk:{k}", "chunk", (*base, "run", table.name, "--chunk", str(k)), (),
                       cron, table.source, table=table.name, chunk=k) for k in range(1, (count or 0) + 1)]
        units += chunks
        units.append(Unit(table_unit_id(table.name), "table", (*base, "run", table.name),
                          tuple(c.id for c in chunks), cron, table.source, table=table.name))
        add_checks(f"{bronze}.{table.name}", table_unit_id(table.name), cron, table.source)
    for relation in project.sources:  # checks on tables bronzeline does not load: nothing to wait for
        if relation not in table_of:
            add_checks(relation, "", config.schedule.cron, relation.split(".", 1)[0])

    model_cron = config.schedule.cron if config.models is not None and config.models.schedule_build else None
    for relation in order:
        model = project.models[relation]
        deps: list[str] = []
        for upstream in sorted(graph[relation]):
            if upstream in project.models:
                deps.append(model_unit_id(upstream))
            elif upstream in table_of:
                deps.append(table_unit_id(table_of[upstream].name))
            deps += [c.id for c in check_ids.get(upstream, []) if c.blocking]
        units.append(Unit(model_unit_id(relation), "model", (*base, "build", relation), tuple(deps), model_cron,
                          model.schema, relation=relation, materialized=model.materialized))
        add_checks(relation, model_unit_id(relation), model_cron, model.schema)
    return Plan(config.project, config.timezone, _ordered(units))


def _ordered(units: list[Unit]) -> list[Unit]:
    """Dependency order, stable: among the units that are ready, the one declared first goes first."""
    position = {u.id: i for i, u in enumerate(units)}
    if len(position) != len(units):
        raise ConfigError("the plan names a unit twice; give tables and models distinct names")
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter({u.id: set(u.deps) for u in units})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:  # the model graph refuses cycles first; kept for a clear message
        raise ConfigError(f"the plan has a cycle: {' -> '.join(exc.args[1])}") from None
    ready: list[int] = []
    done: list[Unit] = []
    while sorter.is_active():
        for unit_id in sorter.get_ready():
            heapq.heappush(ready, position[unit_id])
        unit = units[heapq.heappop(ready)]
        done.append(unit)
        sorter.done(unit.id)
    return done


def render(plan: Plan) -> list[str]:
    """The text form of `bronzeline plan`: one block per unit, in dependency order."""
    lines = [f"{plan.project} ({plan.timezone}): {len(plan.units)} unit(s)"]
    for unit in plan.units:
        extra = [f"group {unit.group}", f"cron {unit.cron}" if unit.cron else "no cron"]
        if unit.kind == "check":
            extra.append(f"{unit.severity}{', blocking' if unit.blocking else ''}")
        if unit.kind == "model" and unit.materialized:
            extra.append(unit.materialized)
        lines.append(f"{unit.id}  ({'; '.join(extra)})")
        lines.append(f"    $ {' '.join(_quoted(a) for a in unit.command)}")
        if unit.deps:
            lines.append(f"    after {', '.join(unit.deps)}")
    return lines


def _quoted(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
