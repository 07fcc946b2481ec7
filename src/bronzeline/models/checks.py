"""Running data checks: each check counts its failing rows and the rows it judged in one query (a
sample of failing keys read only when something failed), applies `mostly` and `severity`, and never
raises for a check that cannot run — that check fails (or warns) with its file named, and the next
one still runs. Results go to `dwh_control.check_results` through the models ledger.

How a check becomes SQL is in models/checks_compile.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psycopg

from bronzeline.errors import BronzelineError, WarehouseUnreachable
from bronzeline.models.checks_compile import TABLE_LEVEL, compile_check, count_query, validate_check
from bronzeline.models.outcome import CheckResult, CheckStatus
from bronzeline.models.spec import CheckSpec
from bronzeline.text import first_line
from bronzeline.warehouse.model_ledger import ModelLedger

if TYPE_CHECKING:  # reconcile.py reaches the sources; running checks does not need it
    from bronzeline.models.reconcile import ReconcileCounter

Conn = psycopg.Connection[Any]

__all__ = ["compile_check", "run_check", "run_checks", "validate_check"]


def passes(failing: int, total: int, mostly: float) -> bool:
    """`mostly` is the share of rows that must pass: failing/total ≤ 1 − mostly (a hair of slack for
    floats, so mostly 0.999 allows exactly 1 row in 1000)."""
    if failing <= 0:
        return True
    if total <= 0:
        return False
    return failing / total <= (1.0 - mostly) + 1e-12


def _status(spec: CheckSpec, failed: bool, warned: bool = False) -> CheckStatus:
    if failed:
        return "warn" if spec.severity == "warn" else "fail"
    return "warn" if warned else "pass"


def _query_text(conn: Conn, spec: CheckSpec, target: str | None) -> str:
    try:
        return compile_check(spec, target).as_string(conn)
    except BronzelineError:
        return ""


def _error_result(spec: CheckSpec, target: str | None, query: str, why: str) -> CheckResult:
    where = target if target and target != spec.relation else spec.relation
    origin = f" (declared in {spec.origin})" if spec.origin else ""
    message = f"{where}: check {spec.name}{origin} could not run: {why}"
    return CheckResult(spec, _status(spec, True), 0, 0, query=query, error=message)


def _reconcile(spec: CheckSpec, counter: ReconcileCounter | None, query: str) -> CheckResult:
    if counter is None:
        raise _NoCounter("reconcile needs the source's count: run it with `bronzeline build` or `bronzeline test`")
    source_rows, bronze_rows = counter(spec.relation)
    failing = abs(bronze_rows - source_rows)
    sample = ([] if failing == 0 else
              [{"source_rows": source_rows, "bronze_rows": bronze_rows, "difference": bronze_rows - source_rows}])
    return CheckResult(spec, _status(spec, not passes(failing, source_rows, spec.mostly)), failing, source_rows,
                       sample=sample, query=query)


class _NoCounter(BronzelineError):
    """A reconcile check was run without the means to count the source."""


def run_check(conn: Conn, spec: CheckSpec, *, target: str | None = None,
              reconcile: ReconcileCounter | None = None) -> CheckResult:
    """Run one check against `target` (default spec.relation), in a savepoint (or its own transaction
    on an autocommit connection), so a check whose SQL fails leaves the connection usable."""
    problems = validate_check(spec)
    if problems:
        return _error_result(spec, target, "", problems[0])
    query = _query_text(conn, spec, target)
    try:
        if spec.kind == "reconcile":
            return _reconcile(spec, reconcile, query)
        with conn.transaction():
            row = conn.execute(count_query(spec, target)).fetchone()
    except BronzelineError as exc:
        return _error_result(spec, target, query, first_line(exc))
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise WarehouseUnreachable(f"{spec.relation}: the warehouse connection was lost while running check "
                                       f"{spec.name}; run the checks again") from exc
        return _error_result(spec, target, query, first_line(exc))
    assert row is not None  # an aggregate without GROUP BY always returns one row
    total, failing, warned, sample = int(row[0]), int(row[1]), bool(row[2]), list(row[3] or [])
    failed = failing > 0 if spec.kind in TABLE_LEVEL else not passes(failing, total, spec.mostly)
    return CheckResult(spec, _status(spec, failed, warned), failing, total, sample=sample, query=query)


def run_checks(conn: Conn, specs: Iterable[CheckSpec], *, ledger: ModelLedger | None = None,
               build_id: int | None = None, target: str | None = None,
               reconcile: ReconcileCounter | None = None) -> list[CheckResult]:
    """Run the checks in order; record each in `check_results` (under spec.relation, whatever `target`
    was read) when a ledger is given."""
    results: list[CheckResult] = []
    for spec in specs:
        result = run_check(conn, spec, target=target, reconcile=reconcile)
        if ledger is not None:
            record(ledger, result, build_id)
        results.append(result)
    return results


def record(ledger: ModelLedger, result: CheckResult, build_id: int | None) -> int:
    """One result into `check_results`."""
    spec = result.spec
    return ledger.record_check(
        build_id=build_id, check_name=spec.kind, relation=spec.relation, column=spec.column,
        severity=spec.severity if spec.severity in ("error", "warn") else "error", status=result.status,
        failing_rows=result.failing_rows, total_rows=result.total_rows, sample=result.sample, query=result.query,
        error=result.error)
