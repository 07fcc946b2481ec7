"""What a Dagster materialization does: the same library calls as the command line, nothing else.

- a table asset is `bronzeline run <table>`: `pipeline.run_tables` (the per-table lock, pending batch
  files first, the config's retries and timeout, batch files, ledger rows), then the checks declared on
  its bronze table as `bronzeline test bronze.<table>` runs them (`models.build.build(checks_only=True)`);
- a model asset is `bronzeline build <schema>.<name>`: `models.build.build` (write–audit–publish: the
  model's checks gate its publication inside the build's transaction).

Outcomes become Dagster events:

- loaded / built: a materialization whose metadata comes from the ledger (run ids, window, rows, batch
  files; build id and rows for models), with one check result per declared check;
- a model whose error-severity check failed keeps its last good version (the build rolled back): it is
  reported with its failing check results, and as those checks are blocking, Dagster does not run what
  reads the model — the same "blocked by …" rule as `build`;
- skipped because another run holds the table's (or model's) lock: a success with metadata
  `skipped: lock held`. The other run is loading that very table, under the same lock and ledger, so
  nothing is doubled and nothing needs doing here; retrying would only wait for it. This is also what
  the command line does (a skip is not a failure);
- failed: bronzeline has already retried transient failures itself, with fresh connections and
  backoff, and written each attempt to the ledger (`retries:` in the config). What is still transient
  after those attempts (a source or warehouse outage longer than the backoff) asks Dagster for a later
  retry of the step (`RetryRequested`, `step_retries` times, after `retries.max_backoff_seconds`); a
  terminal failure (a wrong config, a refused login, a refused batch, a timeout) fails the step without
  a retry (`Failure(allow_retries=False)`): another attempt would fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import dagster as dg
import psycopg

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.models.build import build
from bronzeline.models.outcome import CheckResult, ModelOutcome
from bronzeline.pipeline import TableOutcome, run_tables
from bronzeline.pipeline.attempts import classify
from bronzeline.plan import Unit
from bronzeline.text import iso
from bronzeline.warehouse.control_read import ControlReader, RunRecord

LOCK_HELD = "lock held"


@dataclass(frozen=True)
class CheckRef:
    """A plan check unit as Dagster names it (check names are letters, digits and underscores there)."""

    unit: Unit
    name: str
    key: dg.AssetKey


@dataclass(frozen=True)
class Step:
    """What every asset of one Definitions shares."""

    config: Config
    step_retries: int

    def retry_or_fail(self, message: str, error: BaseException | None) -> NoReturn:
        """Transient after bronzeline's own attempts: ask Dagster to retry the step later; else fail it."""
        cause = error if error is not None else BronzelineError(message)
        if classify(error) == "transient":
            raise dg.RetryRequested(max_retries=self.step_retries,
                                    seconds_to_wait=self.config.retries.max_backoff_seconds) from cause
        raise dg.Failure(description=message, allow_retries=False) from cause

    def guarded(self, call: Callable[[], Any]) -> Any:
        """A library call that raised instead of reporting (not migrated, warehouse down): the same mapping."""
        try:
            return call()
        except (BronzelineError, psycopg.Error) as exc:
            self.retry_or_fail(str(exc), exc)


Event = dg.MaterializeResult[None] | dg.AssetCheckResult
Events = list[Event]


def materialize_table(step: Step, unit: Unit, relation: str, checks: Sequence[CheckRef],
                      context: dg.AssetExecutionContext) -> Events:
    table = unit.table or ""

    def run() -> tuple[TableOutcome, dict[int, RunRecord]]:
        with Context(step.config) as ctx:
            [outcome] = run_tables(step.config, [table], ctx=ctx)
            records = ControlReader(ctx.warehouse, step.config.warehouse.control_schema).runs_by_id(
                outcome.runs) if outcome.runs else {}
        return outcome, records

    outcome, records = step.guarded(run)
    if outcome.status == "failed":
        context.log.error(outcome.message)
        step.retry_or_fail(outcome.message, outcome.error)
    selected = _selected(checks, context)
    verdicts: list[CheckResult] = []
    if selected:  # on bronze as it is now, as `bronzeline test bronze.<table>` runs them
        report = step.guarded(lambda: build(step.config, [relation], checks_only=True))
        verdicts = [r for r in report.sources if r.spec.relation == relation]
    results = check_results(selected, verdicts)
    if outcome.status == "skipped":
        return _skipped(context, outcome.message, results)
    return [dg.MaterializeResult(metadata=table_metadata(outcome, records), check_results=results)]


def materialize_model(step: Step, unit: Unit, checks: Sequence[CheckRef],
                      context: dg.AssetExecutionContext) -> Events:
    relation = unit.relation or ""
    report = step.guarded(lambda: build(step.config, [relation]))
    outcome = next(m for m in report.models if m.model == relation)
    selected = _selected(checks, context)
    if outcome.status == "skipped":
        if selected:  # the published version's checks, as `bronzeline test` reads them
            tested = step.guarded(lambda: build(step.config, [relation], checks_only=True))
            outcome.checks = next(m for m in tested.models if m.model == relation).checks
        return _skipped(context, outcome.message, check_results(selected, outcome.checks))
    if outcome.status == "blocked":
        raise dg.Failure(description=outcome.message, allow_retries=False)
    if outcome.status == "failed" and not any(c.blocks for c in outcome.checks):
        context.log.error(outcome.message)
        raise dg.Failure(description=outcome.message)  # a build error: a RetryPolicy, if set, applies
    results = check_results(selected, outcome.checks)
    if outcome.status == "failed":
        # Not published (the build rolled back): no materialization, only the failing checks, which are
        # blocking — Dagster fails the step and runs nothing that reads the model.
        context.log.error(outcome.message)
        return list(results)
    return [dg.MaterializeResult(metadata=model_metadata(outcome), check_results=results)]


def _skipped(context: dg.AssetExecutionContext, message: str, results: list[dg.AssetCheckResult]) -> Events:
    """Another run holds the lock and is doing this very work: a success that materializes nothing
    (so what reads the asset waits for the next run instead of racing the other one), with an
    observation that says why."""
    context.log.warning(message)
    context.log_event(dg.AssetObservation(asset_key=context.asset_key,
                                          metadata={"skipped": LOCK_HELD, "message": message}))
    return list(results)


def _selected(checks: Sequence[CheckRef], context: dg.AssetExecutionContext) -> list[CheckRef]:
    """The checks this run asked for (all of them unless a run selected only some)."""
    wanted = context.selected_asset_check_keys
    return [c for c in checks if dg.AssetCheckKey(c.key, c.name) in wanted]


def table_metadata(outcome: TableOutcome, records: dict[int, RunRecord]) -> dict[str, Any]:
    """What the ledger says about this run of the table."""
    runs = [records[r] for r in outcome.runs if r in records]
    data: dict[str, Any] = {"status": outcome.status, "attempts": outcome.attempts,
                            "seconds": round(outcome.seconds, 3)}
    data.update(rows_extracted=sum(r.rows_extracted or 0 for r in runs),
                rows_loaded=sum(r.rows_loaded or 0 for r in runs),
                rows_skipped=sum(r.rows_skipped or 0 for r in runs),
                rows_deleted=sum(r.rows_deleted or 0 for r in runs),
                run_ids=[r.run_id for r in runs], batch_files=[r.csv_path for r in runs if r.csv_path])
    if runs:
        last = runs[-1]
        data.update(run_id=last.run_id, window_start=iso(last.window_start), window_end=iso(last.window_end),
                    batch_file=dg.MetadataValue.path(last.csv_path) if last.csv_path else None)
    else:
        data["message"] = "no new rows: nothing to extract in this window"
    return data


def model_metadata(outcome: ModelOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {"status": outcome.status, "materialized": outcome.materialized,
                            "rows": outcome.rows, "build_id": outcome.build_id, "seconds": round(outcome.seconds, 3)}
    if outcome.message:
        data["message"] = outcome.message
    return data


def check_results(refs: Sequence[CheckRef], verdicts: Sequence[CheckResult]) -> list[dg.AssetCheckResult]:
    """One Dagster result per declared check, matched in declaration order (the plan's order is the
    project's). `pass` passes; `fail` (an error check) fails with ERROR severity, which blocks what
    reads the relation; `warn` fails with WARN severity, which blocks nothing."""
    by_name: dict[str, list[CheckResult]] = {}
    for verdict in verdicts:
        by_name.setdefault(verdict.spec.name, []).append(verdict)
    found = []
    for ref in refs:
        plain = (ref.unit.check or "").split("#", 1)[0]
        queue = by_name.get(plain) or []
        if not queue:
            raise dg.Failure(description=f"{ref.unit.relation}: check {ref.unit.check} reported no result; "
                                         "run `bronzeline test` to see why", allow_retries=False)
        verdict = queue.pop(0)
        severity = dg.AssetCheckSeverity.ERROR if verdict.status == "fail" else dg.AssetCheckSeverity.WARN
        metadata: dict[str, Any] = {"status": verdict.status, "failing_rows": verdict.failing_rows,
                                    "total_rows": verdict.total_rows, "severity": verdict.spec.severity}
        if verdict.sample:
            metadata["sample"] = dg.MetadataValue.json(verdict.sample)
        if verdict.error:
            metadata["error"] = verdict.error
        if verdict.query:
            metadata["query"] = dg.MetadataValue.md(f"```sql\n{verdict.query}\n```")
        found.append(dg.AssetCheckResult(asset_key=ref.key, check_name=ref.name, passed=verdict.status == "pass",
                                         severity=severity, metadata=metadata))
    return found
