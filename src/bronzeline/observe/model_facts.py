"""Models as `status`, `serve` and `verify` show them: each model's latest build with its check counts,
the latest result of every check, and the models project's dependency graph. Reads only.

The ledger says what happened; the project (the models folder) says what exists and in which order.
When the project cannot be read (a model file with an error), the ledger is still shown, with the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.models.spec import CheckSpec
from bronzeline.text import first_line, iso
from bronzeline.warehouse.model_ledger import CheckRecord, ModelLedger

MODEL_STATUSES = ("built", "failed", "blocked", "building")
CHECK_STATUSES = ("pass", "warn", "fail")
FAILING = frozenset({"failed", "blocked"})


@dataclass(frozen=True)
class ModelStatus:
    model: str
    materialized: str
    status: str  # the latest build's: built | failed | blocked | building
    last_built_at: datetime | None  # the latest successful build (what readers see now)
    rows: int | None  # rows of that build
    failed_checks: int  # latest results of the model's error checks that failed
    warned_checks: int  # … and of its checks that warned
    message: str | None = None  # why the latest build failed or was blocked

    def as_json(self) -> dict[str, Any]:
        """The `status --json` (and /api/status) shape."""
        return {"model": self.model, "materialized": self.materialized, "status": self.status,
                "last_built_at": iso(self.last_built_at), "rows": self.rows, "failed_checks": self.failed_checks,
                "warned_checks": self.warned_checks}


@dataclass(frozen=True)
class ModelGraph:
    """The project's models in build order, what each reads, and the bronze tables that have checks."""

    materialized: dict[str, str]  # model -> materialization, in build order
    upstream: dict[str, frozenset[str]]  # model -> models and tables it reads
    sources: frozenset[str] = frozenset()
    checks: dict[str, tuple[CheckSpec, ...]] = field(default_factory=dict)  # relation -> its declared checks

    def knows(self, relation: str) -> bool:
        return relation in self.materialized or relation in self.sources


@dataclass
class ModelsView:
    models: list[ModelStatus] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    graph: ModelGraph | None = None
    error: str | None = None  # the project could not be read

    def checks_of(self, relation: str) -> list[CheckRecord]:
        return [c for c in self.checks if c.relation == relation]


def check_json(check: CheckRecord) -> dict[str, Any]:
    return {"relation": check.relation, "check": check.check_name, "column": check.column_name,
            "severity": check.severity, "status": check.status, "failing_rows": check.failing_rows,
            "total_rows": check.total_rows, "error": check.error_message, "checked_at": iso(check.checked_at)}


def load_graph(config: Config) -> ModelGraph:
    """The models project's graph; raises ConfigError naming the file when the project has an error."""
    from bronzeline.models.graph import build_order, dependencies
    from bronzeline.models.project import load_project

    project = load_project(config)
    ordered = build_order(project, config)  # a cycle is the project's error, told as such
    deps = dependencies(project, config)
    depth: dict[str, int] = {}
    for model in ordered:  # each model after what it reads
        depth[model] = 1 + max((depth.get(d, -1) for d in deps.get(model, ()) if d in project.models), default=-1)
    # graphlib's order varies from one process to the next; shown lists must not
    order = sorted(project.models, key=lambda m: (depth.get(m, 0), m))
    checks = {m: project.models[m].checks for m in order} | {s.relation: s.checks for s in project.sources.values()}
    return ModelGraph({m: project.models[m].materialized for m in order},
                      {m: frozenset(deps.get(m, ())) - {m} for m in order}, frozenset(project.sources),
                      {r: c for r, c in checks.items() if c})


def models_view(ctx: Context, *, graph: ModelGraph | None = None) -> ModelsView:
    """Everything the pages show about models; empty without a `models:` section."""
    config = ctx.config
    if config.models is None:
        return ModelsView()
    view = ModelsView(graph=graph)
    if graph is None:
        try:
            view.graph = load_graph(config)
        except BronzelineError as exc:
            view.error = first_line(exc)
    ledger = ModelLedger(ctx.warehouse, config.warehouse.control_schema)
    builds = ledger.latest_builds()
    checks = ledger.latest_checks()
    known = view.graph
    # Once the project is known, what it no longer declares is history, not status.
    view.checks = [c for c in checks if known is None or known.knows(c.relation)]
    if not builds:
        return view
    rows = ledger.last_built_rows()
    names = list(known.materialized) if known is not None else sorted(builds)
    for name in names:
        build = builds.get(name)
        if build is None:
            continue
        mine = view.checks_of(name)
        view.models.append(ModelStatus(
            model=name, materialized=build.materialized, status=build.status, last_built_at=build.last_built_at,
            rows=rows.get(name), failed_checks=sum(c.status == "fail" for c in mine),
            warned_checks=sum(c.status == "warn" for c in mine),
            message=build.error_message if build.status in FAILING else None))
    return view


def models_json(ctx: Context) -> list[dict[str, Any]]:
    """The `models` list of `status --json` and /api/status."""
    return [m.as_json() for m in models_view(ctx).models]
