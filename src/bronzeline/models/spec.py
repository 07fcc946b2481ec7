"""What a models project declares, once parsed: models, their checks, and checks on bronze tables.

Everything here is plain data, built by models/project.py from `models/<schema>/<name>.sql` files
and the `*.yml` property files (dbt's shape), and read by the graph, the materializations, the checks
and the build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Materialized = Literal["view", "matview", "table", "incremental", "function"]
MATERIALIZATIONS: tuple[Materialized, ...] = ("view", "matview", "table", "incremental", "function")
Severity = Literal["error", "warn"]
CHECK_KINDS = ("not_null", "unique", "accepted_values", "relationships", "accepted_range", "expression_is_true",
               "row_count", "freshness", "reconcile")


@dataclass(frozen=True)
class CheckSpec:
    """One data test, in dbt's shape: `kind` (not_null, unique, accepted_values, relationships,
    accepted_range, expression_is_true, row_count, freshness, reconcile) with its arguments.

    - `relation`: `schema.name` of the model or bronze table it checks;
    - `column`: set for column-level checks (`columns: [{name, data_tests}]`), else None;
    - `args`: the kind's own arguments (values, to, field, min_value, max_value, expression, min, max,
      warn_after, error_after, …) exactly as written;
    - `severity`, `mostly` (share of rows that must pass, 0 < mostly ≤ 1), `where` (a SQL condition
      that limits the rows checked) apply to every kind;
    - `key`: the relation's key columns, used to show a sample of failing rows (empty: show columns
      of the failing rows themselves).
    """

    kind: str
    relation: str
    column: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    severity: Severity = "error"
    mostly: float = 1.0
    where: str | None = None
    key: tuple[str, ...] = ()
    origin: str = ""  # the property file that declared it, for messages

    @property
    def name(self) -> str:
        """How results and messages name it: `not_null(km)`, `row_count`."""
        return f"{self.kind}({self.column})" if self.column else self.kind


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Model:
    """One model: `schema.name`, from `path` (a .sql file holding one SELECT, or DDL for `function`)."""

    schema: str
    name: str
    path: Path
    sql: str  # the file's text, run as written (never regenerated)
    materialized: Materialized = "view"
    key: tuple[str, ...] = ()
    watermark: str | None = None  # incremental: the output column that orders rows in time
    depends_on: tuple[str, ...] = ()  # declared in properties, added to what the SQL references
    checks: tuple[CheckSpec, ...] = ()
    columns: tuple[ColumnSpec, ...] = ()
    description: str = ""

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SourceTable:
    """A bronze table named under `sources:` in properties, with its checks."""

    relation: str  # schema.name, e.g. bronze.position_history
    checks: tuple[CheckSpec, ...] = ()


@dataclass
class Project:
    """The parsed models folder."""

    root: Path
    models: dict[str, Model] = field(default_factory=dict)  # relation -> model
    sources: dict[str, SourceTable] = field(default_factory=dict)  # relation -> source checks
