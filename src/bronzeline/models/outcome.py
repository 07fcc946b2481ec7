"""What a build or a test pass reports: per model and per check, typed, for the CLI (`build --json`),
the scheduler and orchestrators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bronzeline.models.spec import CheckSpec

CheckStatus = Literal["pass", "warn", "fail"]
ModelStatus = Literal["built", "failed", "blocked", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. `status` is `fail` only for an error-severity check that failed (or could
    not run); a failed warn-severity check is `warn`. `query` is the SQL for the failing rows, as run."""

    spec: CheckSpec
    status: CheckStatus
    failing_rows: int
    total_rows: int
    sample: list[dict[str, Any]] = field(default_factory=list)
    query: str = ""
    error: str | None = None

    @property
    def blocks(self) -> bool:
        return self.status == "fail"

    def as_json(self) -> dict[str, Any]:
        return {"check": self.spec.name, "kind": self.spec.kind, "relation": self.spec.relation,
                "column": self.spec.column, "severity": self.spec.severity, "status": self.status,
                "failing_rows": self.failing_rows, "total_rows": self.total_rows, "sample": self.sample,
                "error": self.error}


@dataclass
class ModelOutcome:
    model: str  # schema.name
    materialized: str
    status: ModelStatus
    rows: int | None = None
    seconds: float = 0.0
    message: str = ""  # why it failed or was blocked
    checks: list[CheckResult] = field(default_factory=list)
    build_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "materialized": self.materialized, "status": self.status, "rows": self.rows,
                "seconds": round(self.seconds, 3), "message": self.message, "build_id": self.build_id,
                "checks": [c.as_json() for c in self.checks]}


@dataclass
class BuildReport:
    sources: list[CheckResult] = field(default_factory=list)  # checks on bronze tables, run first
    models: list[ModelOutcome] = field(default_factory=list)  # in build order

    @property
    def ok(self) -> bool:
        """No model failed and no error check failed (blocked models follow from those)."""
        return (not any(m.status == "failed" for m in self.models)
                and not any(c.blocks for c in self.sources)
                and not any(c.blocks for m in self.models for c in m.checks))

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "sources": [c.as_json() for c in self.sources],
                "models": [m.as_json() for m in self.models]}
