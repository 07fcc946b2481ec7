"""`bronzeline build` and `bronzeline test`: checks on bronze tables first, then each model in
dependency order — build, check, publish — in one warehouse transaction per model. A model whose build
or error-severity check fails keeps its last good version (the transaction rolls back), and every
model that reads it is `blocked` for this build. Warn-severity failures are reported and block nothing.
"""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
from psycopg import sql

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, ConfigError
from bronzeline.events import EventSink, ignore
from bronzeline.faults import crash_point
from bronzeline.models import materialize
from bronzeline.models.checks_compile import ROW_LEVEL
from bronzeline.models.graph import build_order, dependencies, upstream
from bronzeline.models.outcome import BuildReport, CheckResult, ModelOutcome
from bronzeline.models.project import load_project
from bronzeline.models.spec import CheckSpec, Model, Project
from bronzeline.redact import redact
from bronzeline.text import first_line
from bronzeline.warehouse.control_read import ControlReader
from bronzeline.warehouse.model_ledger import ModelLedger


class _Rollback(Exception):
    """An error check failed: undo the build's transaction (the published version stays)."""


def build(config: Config, selected: list[str] | None = None, *, full_refresh: bool = False,
          checks_only: bool = False, on_event: EventSink | None = None) -> BuildReport:
    """Build (or with `checks_only`, only check) the selected models (all by default) in order."""
    project = load_project(config)
    graph = dependencies(project, config)
    order = build_order(project, config, graph)
    chosen, tables = _select(project, selected, config)
    with Context(config) as ctx:
        return _Build(ctx, project, graph, on_event or ignore).run(order, chosen, full_refresh, checks_only, tables)


def _select(project: Project, selected: list[str] | None, config: Config) -> tuple[set[str], set[str]]:
    """(models, bronze tables) named: a model as schema.name or name; a bronze table as schema.name, which
    selects only its own checks (`bronzeline test bronze.positions`: one orchestrator task per table)."""
    if not selected:
        return set(project.models), set(project.sources)
    bronze = {f"{config.warehouse.bronze_schema}.{t.name}" for t in config.tables} | set(project.sources)
    chosen, tables = set(), set()
    for name in selected:
        matches = [m for m in project.models if m == name or m.split(".", 1)[1] == name]
        if not matches and name in bronze:
            tables.add(name)
            continue
        if not matches:
            known = ", ".join(sorted(project.models)) or "none"
            raise ConfigError(f"no model named {name!r}; the models are: {known} (a bronze table is named as "
                              f"{config.warehouse.bronze_schema}.<table>)")
        chosen.update(matches)
    return chosen, tables


class _Build:
    def __init__(self, ctx: Context, project: Project, graph: dict[str, set[str]], on_event: EventSink) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.project = project
        self.graph = graph
        self.on_event = on_event
        self.ledger = ModelLedger(ctx.warehouse, self.config.warehouse.control_schema)
        self.conn = ctx.load_conn  # build transactions; the ledger writes on the autocommit connection

    def _safe(self, text: str) -> str:
        return redact(text, self.config.secrets())

    def run(self, order: list[str], chosen: set[str], full_refresh: bool, checks_only: bool,
            tables: set[str]) -> BuildReport:
        self.ctx.require_migrated()
        report = BuildReport()
        failed: dict[str, str] = {}  # relation -> why its dependents are blocked
        wanted_sources = {r for m in chosen for r in upstream(self.graph, m)} | set(chosen) | tables
        for relation, source in self.project.sources.items():
            if relation in wanted_sources:
                results = self._checks(list(source.checks))
                report.sources += results
                if any(r.blocks for r in results):
                    failed[relation] = f"an error check on {relation} failed"
        rebuild: set[str] = set()
        for relation in order:
            if relation not in chosen and relation not in rebuild:
                continue
            model = self.project.models[relation]
            blockers = sorted(u for u in upstream(self.graph, relation) if u in failed)
            if blockers:
                why = f"blocked by {blockers[0]}: {failed[blockers[0]]}"
                outcome = ModelOutcome(relation, model.materialized, "blocked", message=why)
                if not checks_only:
                    outcome.build_id = self.ledger.record_blocked(relation, model.materialized, why)
                failed[relation] = f"blocked by {blockers[0]}"
                report.models.append(outcome)
                continue
            outcome = self._test(model) if checks_only else self._build(model, full_refresh, rebuild)
            report.models.append(outcome)
            if outcome.status == "failed" or any(c.blocks for c in outcome.checks):
                failed[relation] = outcome.message or "an error check failed"
        return report

    # ------------------------------------------------------------------ one model
    def _test(self, model: Model) -> ModelOutcome:
        started = time.monotonic()
        outcome = ModelOutcome(model.relation, model.materialized, "built")
        if materialize.relkind(self.ctx.warehouse, model) is None and model.materialized != "function":
            outcome.status, outcome.message = "failed", f"{model.relation} does not exist; run `bronzeline build`"
        else:
            outcome.checks = self._checks(list(model.checks))
        outcome.seconds = time.monotonic() - started
        return outcome

    def _build(self, model: Model, full_refresh: bool, rebuild: set[str]) -> ModelOutcome:
        started = time.monotonic()
        relation = model.relation
        outcome = ModelOutcome(relation, model.materialized, "built")
        if not self.ledger.try_lock(relation):
            outcome.status, outcome.message = "skipped", f"{relation}: another build holds this model's lock; skipped"
            return outcome
        try:
            self.ledger.fail_stale_builds(relation)
            outcome.build_id = self.ledger.start_build(relation, model.materialized, full_refresh=full_refresh)
            pending: list[CheckResult] = []
            built: materialize.Built | None = None
            try:
                with self.conn.transaction():
                    built, dropped = self._materialize(model, full_refresh)
                    rebuild.update(d for d in dropped if d in self.project.models)
                    pending = self._gate(model, built)
                    if any(r.blocks for r in pending):
                        raise _Rollback
                    if model.materialized == "incremental" and built.window_end is not None:
                        self.ledger_in_tx().set_built_through(relation, built.window_end)
                    crash_point("publish")  # the new version is complete and checked; the commit publishes it
            except _Rollback:
                failing = [r.spec.name for r in pending if r.blocks]
                outcome.status = "failed"
                outcome.message = f"{relation}: error check(s) failed: {', '.join(failing)}; the published " \
                                  "version was kept"
            except (BronzelineError, psycopg.Error) as exc:
                outcome.status = "failed"
                outcome.message = self._safe(_model_error(model, exc))
            outcome.checks = self._record(pending, outcome.build_id)
            outcome.rows = built.rows if built is not None and outcome.status == "built" else None
            self.ledger.finish_build(outcome.build_id, outcome.status, rows=outcome.rows,
                                     error=outcome.message or None,
                                     window_start=built.window_start if built else None,
                                     window_end=built.window_end if built else None)
        finally:
            self.ledger.unlock(relation)
            outcome.seconds = time.monotonic() - started
        return outcome

    def ledger_in_tx(self) -> ModelLedger:
        """The ledger on the build's own connection: writes that commit with the model's rows."""
        return ModelLedger(self.conn, self.config.warehouse.control_schema)

    def _materialize(self, model: Model, full_refresh: bool) -> tuple[materialize.Built, list[str]]:
        conn = self.conn
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(model.schema)))
        models = set(self.project.models)
        dropped: list[str] = []
        if model.materialized == "view":
            built, dropped = materialize.build_view(conn, model, models)
        elif model.materialized == "table":
            built, dropped = materialize.build_table(conn, model, models)
        elif model.materialized == "matview":
            built, dropped = materialize.build_matview(conn, model, models)
        elif model.materialized == "function":
            built = materialize.build_function(conn, model)
        else:
            start = None if full_refresh else self.ledger_in_tx().built_through(model.relation)
            built, dropped = materialize.build_incremental(conn, model, models, start, self._upstream_bound(model),
                                                           full_refresh=full_refresh)
        self._grant(model)
        return built, dropped

    def _upstream_bound(self, model: Model) -> datetime:
        """The rows known complete: the oldest watermark of the incremental bronze tables it reads
        (a later row may still arrive above it), else the transaction's time."""
        bronze = self.config.warehouse.bronze_schema
        tables = [t.name for t in self.config.tables if t.mode == "incremental"
                  and f"{bronze}.{t.name}" in upstream(self.graph, model.relation)]
        return ControlReader(self.conn, self.config.warehouse.control_schema).oldest_watermark(tables)

    def _grant(self, model: Model) -> None:
        roles = self.config.warehouse.roles
        schema = sql.Identifier(model.schema)
        for role, what in ((roles.owner, "ALL"), (roles.readonly, "SELECT")):
            if not role:
                continue
            r = sql.Identifier(role)
            self.conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, r))
            if model.materialized == "function":
                self.conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(schema, r))
            else:
                self.conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(what), sql.Identifier(model.schema, model.name), r))

    # ------------------------------------------------------------------ checks
    def _gate(self, model: Model, built: materialize.Built) -> list[CheckResult]:
        """The model's checks on what is about to be published. An incremental merge checks its row-level
        checks on the merged rows only (the rows published before were checked when they were merged);
        table-level checks (unique, row_count, freshness) always read the whole relation."""
        if built.merged_rows is None:
            return self._run_checks(list(model.checks), built.check_target)
        rows = [s for s in model.checks if s.kind in ROW_LEVEL]
        whole = [s for s in model.checks if s.kind not in ROW_LEVEL]
        results = {id(r.spec): r for r in self._run_checks(rows, built.merged_rows) + self._run_checks(
            whole, built.check_target)}
        return [results[id(s)] for s in model.checks]

    def _run_checks(self, specs: list[CheckSpec], target: str | None) -> list[CheckResult]:
        if not specs:
            return []
        from bronzeline.models.checks import run_checks
        from bronzeline.models.reconcile import reconcile_counter

        reconcile = reconcile_counter(self.ctx) if any(s.kind == "reconcile" for s in specs) else None
        target = None if target is None or target == specs[0].relation else target
        return run_checks(self.conn, specs, target=target, reconcile=reconcile)

    def _record(self, results: list[CheckResult], build_id: int | None) -> list[CheckResult]:
        """On the autocommit connection: a check that stopped a build stays in the ledger after the rollback."""
        from bronzeline.models.checks import record

        for result in results:
            record(self.ledger, result, build_id)
        return results

    def _checks(self, specs: list[CheckSpec]) -> list[CheckResult]:
        """Checks outside a build (sources, `bronzeline test`), each recorded."""
        if not specs:
            return []
        with self.conn.transaction():
            results = self._run_checks(specs, None)
        return self._record(results, None)


def _model_error(model: Model, exc: BaseException) -> str:
    if isinstance(exc, materialize.BuildError):
        return first_line(exc)  # already names the model
    where = f"{model.relation} ({model.path.parent.name}/{model.path.name})"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return f"{where}: a reader held a lock for longer than {materialize.DDL_LOCK_TIMEOUT}; build again later"
    return f"{where}: {first_line(exc)}"
