"""`verify`: every verification gate, each pass/fail with the numbers behind it.

Three stages: `pre-deploy` (migrations, connections, store, keys, roles, the source login, indexes),
`first-run` (loaded runs, row-count parity, geometry round-trip, no files left, accounting) and
`steady` (freshness against the cadence, no failures in 24 h, bronze keeping up with the source, the cdc
slot's health, and the latest results of the models' error-severity checks).
`warn` and `skip` never fail; any `fail` does. verify writes nothing to the warehouse; it writes and
deletes one probe file in the object store.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError
from bronzeline.observe import verify_cdc
from bronzeline.observe import verify_data as data
from bronzeline.observe.cadence import Cadence, table_cadence
from bronzeline.observe.model_facts import load_graph
from bronzeline.observe.probe import TableProbe
from bronzeline.observe.slots import cdc_sources, slot_statuses
from bronzeline.observe.verify_data import Result, Status
from bronzeline.redact import redact
from bronzeline.sources.base import ServerInfo
from bronzeline.sources.postgres import TIMESTAMP_TYPES
from bronzeline.text import first_line, iso
from bronzeline.warehouse import ddl, migrations
from bronzeline.warehouse.model_ledger import ModelLedger
from bronzeline.warehouse.schema_diff import split_type

STAGES = ("pre-deploy", "first-run", "steady")
_VIEWS = ("v_table_freshness", "v_recent_failures", "v_watermark_lag")


@dataclass
class Gate:
    stage: str
    gate: str
    subject: str
    status: Status
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class VerifyReport:
    project: str
    gates: list[Gate]

    @property
    def ok(self) -> bool:
        return not any(g.status == "fail" for g in self.gates)

    def summary(self) -> dict[str, int]:
        return {s: sum(g.status == s for g in self.gates) for s in ("pass", "fail", "warn", "skip")}

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "ok": self.ok, "summary": self.summary(),
                "gates": [asdict(g) for g in self.gates]}


# An API or push source has no table to count or transactions to see: its completeness is the call log
# (`status`, dwh_control.api_calls) and the raw table.
_API_SKIP = "an API or push table: the source cannot be counted; see the call log in `status`"

def verify(ctx: Context, stages: Iterable[str] = STAGES, cadence: timedelta | None = None) -> VerifyReport:
    return Verifier(ctx, set(stages), cadence).run()


class Verifier:
    def __init__(self, ctx: Context, stages: set[str], cadence: timedelta | None) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.stages = stages
        self.cadence = cadence
        self.gates: list[Gate] = []
        self.down: set[str] = set()  # connections that did not answer
        self.secrets = ctx.config.secrets()
        self.probes: dict[str, TableProbe] = {}

    # ------------------------------------------------------------------ framework
    def add(self, stage: str, gate: str, subject: str, check: Callable[[], Result]) -> Status:
        try:
            status, detail, numbers = check()
        except (BronzelineError, psycopg.Error, OSError) as exc:
            status, detail, numbers = "fail", f"could not check: {first_line(exc)}", {}
        self.gates.append(Gate(stage, gate, subject, status, redact(detail, self.secrets), numbers))
        return status

    def skip(self, stage: str, gate: str, subject: str, why: str) -> None:
        self.gates.append(Gate(stage, gate, subject, "skip", why))

    def run(self) -> VerifyReport:
        # Connections matter to every stage: always checked and shown.
        for name in self.config.connections:
            if self.add("pre-deploy", "connection", name, lambda n=name: self._connection(n)) == "fail":  # type: ignore[misc]
                self.down.add(name)
        if "pre-deploy" in self.stages:
            self.add("pre-deploy", "store_writable", "blob", self._store)
        if self.config.warehouse.connection in self.down:
            return self.report()
        control_missing = not self.ctx.control.exists()
        if "pre-deploy" in self.stages or control_missing:
            self.add("pre-deploy", "migrations", self.config.warehouse.control_schema, self._migrations)
        if control_missing:
            return self.report()
        if "pre-deploy" in self.stages:
            self.add("pre-deploy", "roles", "warehouse.roles", self._roles)
            for table in self.config.tables:
                self._pre_deploy(table)
            for source, names in cdc_sources(self.config).items():
                if source in self.down:
                    self.skip("pre-deploy", "cdc_source", source, f"source {source!r} is unreachable")
                else:
                    self.add("pre-deploy", "cdc_source", source,
                             lambda s=source, n=names: verify_cdc.source_ready(self.ctx, s, n))  # type: ignore[misc]
        if "first-run" in self.stages:
            for table in self.config.tables:
                self._first_run(table)
            self.add("first-run", "accounting", "extract_runs", lambda: data.accounting(self.ctx))
        if "steady" in self.stages:
            for table in self.config.tables:
                self._steady(table)
            self._slots()
            if self.config.models is not None:
                self._models()
        return self.report()

    def report(self) -> VerifyReport:
        order = {s: i for i, s in enumerate(STAGES)}
        return VerifyReport(self.config.project, sorted(self.gates, key=lambda g: order[g.stage]))

    def _probe(self, table: TableConfig) -> TableProbe:
        if table.name not in self.probes:
            self.probes[table.name] = TableProbe(self.ctx, table)
        return self.probes[table.name]

    # ------------------------------------------------------------------ pre-deploy
    def _connection(self, name: str) -> Result:
        start = time.monotonic()
        try:
            if name == self.config.warehouse.connection:
                row = self.ctx.warehouse.execute(
                    "SELECT current_user, current_setting('server_version'), pg_is_in_recovery()").fetchone()
                assert row is not None
                info: ServerInfo | None = ServerInfo(str(row[0]), str(row[1]), bool(row[2]))
            else:
                info = self.ctx.source(name).server_info()
        except BronzelineError as exc:
            return "fail", str(exc), {}
        if info is None:
            return "skip", "not a database connection", {}
        numbers = {"user": info.user, "server_version": info.version, "in_recovery": info.in_recovery,
                   "milliseconds": round((time.monotonic() - start) * 1000, 1)}
        replica = ", a replica" if info.in_recovery else ""
        return "pass", f"connected as {info.user} ({info.product} {info.version}{replica})", numbers

    def _store(self) -> Result:
        store = self.ctx.store
        key = f".bronzeline-verify-{uuid.uuid4().hex[:12]}"
        payload = os.urandom(32).hex().encode()
        start = time.monotonic()
        with store.open_write(key) as handle:
            handle.write(payload)
        try:
            with store.open_read(key) as handle:
                back = handle.read()
        finally:
            store.delete(key)
        numbers = {"bytes": len(payload), "milliseconds": round((time.monotonic() - start) * 1000, 1)}
        if back != payload or store.exists(key):
            return "fail", f"{store.display(key)} did not read back as written (or could not be deleted)", numbers
        return "pass", f"wrote, read back and deleted a probe file in {store.display('')}", numbers

    def _migrations(self) -> Result:
        control = self.config.warehouse.control_schema
        problems = migrations.check(self.ctx.warehouse, control)
        available = len(migrations.available())
        if problems:
            return "fail", "; ".join(problems), {"available": available}
        return "pass", f"{available} migration(s) applied, checksums unchanged", {"available": available}

    def _roles(self) -> Result:
        wh, cfg = self.ctx.warehouse, self.config.warehouse
        wanted = {k: v for k, v in (("owner", cfg.roles.owner), ("readonly", cfg.roles.readonly)) if v}
        if not wanted:
            return "skip", "no warehouse.roles configured", {}
        missing = ddl.missing_roles(wh, self.config)
        if missing:
            return "fail", f"role(s) {', '.join(missing)} do not exist; a DBA must create them", {"missing": missing}
        objects = [sql.Identifier(cfg.control_schema, v).as_string(wh) for v in _VIEWS]
        objects += [sql.Identifier(cfg.bronze_schema, t.name).as_string(wh) for t in self.config.tables]
        lacking: list[str] = []
        if cfg.roles.readonly:
            rows = wh.execute("SELECT o FROM unnest(%s::text[]) o WHERE to_regclass(o) IS NOT NULL "
                              "AND NOT has_table_privilege(%s, o, 'SELECT')", (objects, cfg.roles.readonly)).fetchall()
            lacking = [str(r[0]) for r in rows]
        numbers = {"roles": wanted, "objects_checked": len(objects), "not_readable": lacking}
        if lacking:
            return "fail", (f"{cfg.roles.readonly} cannot read {', '.join(lacking[:5])}; run `bronzeline migrate` "
                            "to grant"), numbers
        return "pass", f"{', '.join(wanted.values())} exist; read-only role can read {len(objects)} objects", numbers

    def _pre_deploy(self, table: TableConfig) -> None:
        st, name = "pre-deploy", table.name
        self.add(st, "bronze_key", name, lambda: self._bronze_key(table))
        if table.source in self.down:
            self.skip(st, "columns", name, f"source {table.source!r} is unreachable")
        else:
            self.add(st, "columns", name, lambda: self._columns(table))
        if table.mode != "incremental":
            return
        self.add(st, "watermark_seeded", name, lambda: self._seeded(table))
        if table.is_api:
            for gate in ("source_visibility", "watermark_index", "null_watermarks"):
                self.skip(st, gate, name, _API_SKIP)
            return
        if table.source in self.down:
            for gate in ("source_visibility", "watermark_index", "null_watermarks"):
                self.skip(st, gate, name, f"source {table.source!r} is unreachable")
            return
        self.add(st, "source_visibility", name, lambda: self._visibility(table))
        self.add(st, "watermark_index", name, lambda: self._watermark_index(table))
        self.add(st, "null_watermarks", name, lambda: self._null_watermarks(table))

    def _bronze_key(self, table: TableConfig) -> Result:
        schema = self.config.warehouse.bronze_schema
        if ddl.bronze_columns(self.ctx.warehouse, schema, table.name) is None:
            return "fail", f"{schema}.{table.name} does not exist; run `bronzeline migrate`", {}
        if not table.key:
            return "pass", f"{schema}.{table.name} exists (no key configured)", {}
        if ddl.bronze_key_matches(self.ctx.warehouse, schema, table.name, list(table.key)):
            return "pass", f"PRIMARY KEY or UNIQUE on ({', '.join(table.key)}) behind ON CONFLICT", {"key": table.key}
        return "fail", (f"{schema}.{table.name} has no PRIMARY KEY or UNIQUE index on ({', '.join(table.key)}); "
                        "add one (or fix `key:`) and run `bronzeline migrate`"), {"key": table.key}

    def _columns(self, table: TableConfig) -> Result:
        columns = self.ctx.source(table.source).describe(table)
        by_name = {c.name: c for c in columns}
        problems = [f"{role} column {name!r} is not in the source's columns"
                    for role, names in (("key", table.key), ("geometry", table.geometry),
                                        ("watermark", [table.watermark] if table.watermark else []))
                    for name in names if name not in by_name]
        problems += [f"geometry column {n!r} is {by_name[n].type}" for n in table.geometry
                     if n in by_name and not by_name[n].is_geometry]
        wm = by_name.get(table.watermark or "")
        if wm is not None and split_type(wm.type)[0] not in TIMESTAMP_TYPES:
            problems.append(f"watermark column {wm.name!r} is {wm.type}, not a timestamp")
        bronze = ddl.bronze_columns(self.ctx.warehouse, self.config.warehouse.bronze_schema, table.name)
        diffs = ddl.column_differences(columns, bronze) if bronze is not None else []
        numbers = {"source_columns": len(columns), "bronze_columns": len(bronze or []), "differences": len(diffs)}
        if problems or diffs:
            more = "; run `bronzeline drift`" if diffs else ""
            return "fail", "; ".join(problems + diffs) + more, numbers
        return "pass", f"{len(columns)} columns agree with bronze", numbers

    def _seeded(self, table: TableConfig) -> Result:
        found = self.ctx.control.find_watermark(table.name)
        if found is None:
            return "fail", "no watermark row; run `bronzeline migrate`", {"seeded": False}
        mark = iso(found.last_extracted_at)
        return "pass", f"watermark row present ({mark or 'nothing loaded yet'})", {"seeded": True, "watermark": mark}

    def _visibility(self, table: TableConfig) -> Result:
        if table.lookback:
            return "pass", f"lookback {table.lookback} re-reads below the watermark", {"lookback": table.lookback}
        seen = self.ctx.source(table.source).visibility()
        user, recovery, superuser, stats = seen.user, seen.in_recovery, seen.superuser, seen.read_all_stats
        sessions = seen.other_sessions
        numbers = {"user": user, "in_recovery": recovery, "superuser": superuser, "pg_read_all_stats": stats,
                   "other_sessions": sessions}
        if recovery:
            return "fail", "the source is a replica: it cannot see the primary's transactions; set `lookback:`", numbers
        if superuser or stats:
            how = "a superuser" if superuser else "a member of pg_read_all_stats"
            return "pass", f"{user} is {how}: it sees other sessions' open transactions", numbers
        return "fail", (f"{user} cannot see other sessions' transactions; a DBA must run GRANT pg_read_all_stats "
                        f"TO {user} (or set `lookback:`)"), numbers

    def _watermark_index(self, table: TableConfig) -> Result:
        rel = table.source_relation
        count = self.ctx.source(table.source).watermark_indexes(table)
        if rel is None or count is None:
            return "skip", "a query: index the watermark column of the table behind it", {}
        if count:
            return "pass", f"{count} index(es) lead with {table.watermark}", {"indexes": count}
        return "warn", (f"no index leads with {table.watermark} at the source: every run scans the whole table; "
                        f"a DBA can run CREATE INDEX ON {rel[0]}.{rel[1]} ({table.watermark})"), {"indexes": 0}

    def _null_watermarks(self, table: TableConfig) -> Result:
        count = self._probe(table).null_watermarks()
        if not count:
            return "pass", f"no row has a NULL {table.watermark}", {"rows": 0}
        return "warn", (f"{count:,} row(s) have a NULL {table.watermark}: they are never extracted; give the column "
                        "a DEFAULT now() and NOT NULL at the source"), {"rows": count}

    # ------------------------------------------------------------------ first run and steady state
    def _first_run(self, table: TableConfig) -> None:
        st, name = "first-run", table.name
        self.add(st, "loaded_run", name, lambda: data.loaded_run(self.ctx, table))
        if not self.ctx.control.try_lock(name):
            for gate in ("parity", "exports_empty"):
                self.gates.append(Gate(st, gate, name, "warn", "a run of this table is in progress; verify again "
                                                                 "when it has finished"))
            return
        try:
            if table.is_api:
                self.skip(st, "parity", name, _API_SKIP)
            elif table.source in self.down:
                self.skip(st, "parity", name, f"source {table.source!r} is unreachable")
            else:
                self.add(st, "parity", name, lambda: data.parity(self._probe(table)))
                if table.geometry:
                    self.add(st, "geometry", name, lambda: data.geometry(self._probe(table)))
            self.add(st, "exports_empty", name, lambda: data.exports_empty(self.ctx, table))
        finally:
            self.ctx.control.unlock(name)

    def _steady(self, table: TableConfig) -> None:
        st, name = "steady", table.name
        def cadence() -> Cadence:
            return table_cadence(self.config, table, self.cadence)

        self.add(st, "freshness", name, lambda: data.freshness(self.ctx, table, cadence()))
        self.add(st, "failures_24h", name, lambda: data.failures_24h(self.ctx, table))
        if table.is_api:
            self.skip(st, "growth", name, _API_SKIP)
        elif table.source in self.down:
            self.skip(st, "growth", name, f"source {table.source!r} is unreachable")
        else:
            self.add(st, "growth", name, lambda: data.growth(self._probe(table), cadence()))

    def _slots(self) -> None:
        """Per source with cdc tables: its slot's health (`cdc_slot`)."""
        st = "steady"
        if not cdc_sources(self.config):
            self.skip(st, "cdc_slot", "cdc", "no cdc tables")
            return
        try:
            slots = slot_statuses(self.ctx)
        except (BronzelineError, psycopg.Error) as exc:
            self.gates.append(Gate(st, "cdc_slot", self.config.slot_name(), "fail",
                                   redact(f"could not check: {first_line(exc)}", self.secrets)))
            return
        for slot in slots:
            subject = f"{slot.slot} ({slot.source})"
            if slot.source in self.down:
                self.skip(st, "cdc_slot", subject, f"source {slot.source!r} is unreachable")
            else:
                self.add(st, "cdc_slot", subject,
                         lambda s=slot: verify_cdc.slot_gate(self.config, s, self.cadence))  # type: ignore[misc]

    def _models(self) -> None:
        """Per model (and bronze table) with error-severity checks: their latest results."""
        st = "steady"
        try:
            graph = load_graph(self.config)
        except BronzelineError as exc:
            self.gates.append(Gate(st, "model_checks", "models", "fail", redact(
                f"the models project has an error: {first_line(exc)}", self.secrets)))
            return
        gated = [r for r, specs in graph.checks.items() if any(s.severity == "error" for s in specs)]
        if not gated:
            why = "no error-severity checks" if graph.materialized else "no models"
            self.skip(st, "model_checks", "models", f"{why} in {self.config.models_dir}")
            return
        try:
            latest = ModelLedger(self.ctx.warehouse, self.config.warehouse.control_schema).latest_checks()
        except psycopg.Error as exc:
            self.gates.append(Gate(st, "model_checks", "models", "fail", redact(
                f"could not read the check results: {first_line(exc)}; run `bronzeline migrate`", self.secrets)))
            return
        for relation in gated:
            gate = "model_checks" if relation in graph.materialized else "source_checks"
            self.add(st, gate, relation, lambda r=relation: data.error_checks(  # type: ignore[misc]
                r, graph.checks[r], latest))
