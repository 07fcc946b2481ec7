"""`migrate`: control schema, bronze tables from the source's types, watermark rows, roles and grants,
and the assertions. Idempotent; every problem found is reported at once.

Each table is checked completely first (source columns, key, watermark, bronze's columns and key) and
changed only when it has no problem; its changes (create, added columns, a new primary key) and its
watermark row commit together in one transaction, so a rejected table leaves nothing behind.
`mode: cdc` tables are also checked at their source (sources/cdc/readiness.py: logical WAL, REPLICATION,
the publication, replica identity against `key:`, room for the slot); their bronze tables are made like
an incremental table's, without a watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.errors import BronzelineError, MigrationError
from bronzeline.sources.base import CdcFindings, Column, key_text
from bronzeline.warehouse import ddl, migrations, schema_diff


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class TablePlan:
    """What migrate will do to one table, decided before anything is changed."""

    table: TableConfig
    columns: list[Column]
    create: bool = False
    add: list[Column] = field(default_factory=list)
    rekey: bool = False
    old_key: ddl.PrimaryKey | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    postgis: bool = False


def migrate(ctx: Context) -> MigrateReport:
    config = ctx.config
    wh = ctx.warehouse
    report = MigrateReport()
    problems: list[str] = []
    wcfg = config.warehouse
    try:
        report.applied = migrations.apply(wh, wcfg.control_schema)
        wh.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wcfg.bronze_schema)))
    except psycopg.errors.InsufficientPrivilege as exc:
        user = wh.info.user
        raise MigrationError(f"the warehouse login {user!r} may not create schemas ({str(exc).strip()}); "
                             f"a DBA must run GRANT CREATE ON DATABASE {wh.info.dbname} TO {user}") from None
    problems += [f"role {r!r} (warehouse.roles) does not exist; a DBA must create it"
                 for r in ddl.missing_roles(wh, config)]
    postgis = bool((wh.execute("SELECT to_regtype('geometry') IS NOT NULL").fetchone() or [False])[0])
    cdc = check_cdc(ctx)
    problems += cdc.problems
    report.warnings += cdc.warnings
    for table in config.tables:
        try:
            plan = plan_table(ctx, table, postgis)
        except BronzelineError as exc:
            problems.append(str(exc))
            continue
        report.warnings += plan.warnings
        if plan.problems or table.name in cdc.rejected:
            problems += plan.problems
            continue
        try:
            with wh.transaction():
                created, altered = apply_plan(ctx, plan)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            problems.append(f"{table.name}: cannot change {wcfg.bronze_schema}.{table.name}: {first}")
            continue
        report.created += created
        report.altered += altered
    if not problems and (wcfg.roles.owner or wcfg.roles.readonly):
        ddl.grant(wh, config)
    if problems:
        # the warnings would be lost with the report: they go with the error
        warned = "".join(f"\nwarning: {w}" for w in report.warnings)
        raise MigrationError(f"migrate found {len(problems)} problem(s):\n  - " + "\n  - ".join(problems) + warned)
    return report


def check_cdc(ctx: Context) -> CdcFindings:
    """The `mode: cdc` checks, once per source that has cdc tables (none: no source is asked)."""
    config = ctx.config
    found = CdcFindings()
    by_source: dict[str, list[TableConfig]] = {}
    for table in config.tables:
        if table.mode == "cdc":
            by_source.setdefault(table.source, []).append(table)
    for name, tables in by_source.items():
        try:
            part = ctx.source(name).cdc_readiness(tables, config.publication_name(), config.slot_name())
        except BronzelineError as exc:
            found.problems.append(str(exc))
            found.rejected.update(t.name for t in tables)
            continue
        found.problems += part.problems
        found.warnings += part.warnings
        found.rejected |= part.rejected
    return found


def plan_table(ctx: Context, table: TableConfig, postgis: bool) -> TablePlan:
    """Read-only: everything migrate checks for one table, and what it would change."""
    wh = ctx.warehouse
    schema = ctx.config.warehouse.bronze_schema
    name = f"{schema}.{table.name}"
    source = ctx.source(table.source)
    columns = source.describe(table)
    plan = TablePlan(table, columns, postgis=postgis)
    plan.problems += source.check(table, columns)
    if all(k in {c.name for c in columns} for k in table.key):
        found = source.key_problems(table)
        plan.problems += found.problems
        plan.warnings += found.warnings
    if table.mode == "incremental" and source.watermark_nullable(table):
        plan.warnings.append(f"{table.name}: watermark column {table.watermark} is nullable; rows "
                             "with a NULL watermark are never extracted (`verify` counts them)")
    if any(c.is_geometry for c in columns) and not postgis:
        plan.problems.append(f"{table.name}: has geometry columns but the warehouse has no PostGIS; a DBA must "
                             f"run CREATE EXTENSION postgis in database {wh.info.dbname}")
    bronze = ddl.bronze_columns(wh, schema, table.name)
    if bronze is None:
        plan.create = True
        return plan
    changes = schema_diff.compare(columns, bronze)
    if table.schema_evolution == "add_columns":
        added = {c.column for c in changes if c.kind == "added"}
        plan.add = [c for c in columns if c.name in added]
        changes = [c for c in changes if c.kind != "added"]
    if changes:
        plan.problems.append(f"{table.name}: the source and bronze differ: "
                             f"{'; '.join(c.describe() for c in changes)}; run `bronzeline drift` "
                             "(or set schema_evolution: add_columns for new columns)")
    if table.key and not ddl.bronze_key_matches(wh, schema, table.name, table.key):
        _plan_rekey(ctx, plan, {b.name for b in bronze}, name)
    return plan


def _plan_rekey(ctx: Context, plan: TablePlan, bronze_names: set[str], name: str) -> None:
    """`key:` differs from bronze's primary key: move it, unless bronze's rows would violate the new key."""
    table, wh, schema = plan.table, ctx.warehouse, ctx.config.warehouse.bronze_schema
    key, new = table.key, ", ".join(table.key)
    plan.old_key = ddl.primary_key(wh, schema, table.name)
    old = ", ".join(plan.old_key.columns) if plan.old_key else "none"
    what = f"{table.name}: cannot change the primary key of {name} from ({old}) to ({new})"
    missing = [k for k in key if k not in bronze_names]
    if missing:
        plan.problems.append(f"{what}: bronze has no column {', '.join(missing)} yet; run `bronzeline drift`")
        return
    nulls = ddl.key_nulls(wh, schema, table.name, key)
    if nulls:
        plan.problems.append(f"{what}: {nulls} row(s) have NULL in the key; fix those rows in bronze or `key:`")
        return
    dupes = ddl.key_duplicates(wh, schema, table.name, key)
    if dupes is not None:
        plan.problems.append(
            f"{what}: {dupes.values} key value(s) appear more than once in bronze, e.g. "
            f"{key_text(key, dupes.example)} in {dupes.rows} rows; remove the duplicates from bronze or fix `key:`")
        return
    plan.rekey = True


def apply_plan(ctx: Context, plan: TablePlan) -> tuple[list[str], list[str]]:
    """Run a table's plan on the warehouse connection (the caller holds the transaction);
    returns (created, altered) for the report."""
    wh, schema, table = ctx.warehouse, ctx.config.warehouse.bronze_schema, plan.table
    name = f"{schema}.{table.name}"
    created: list[str] = []
    altered: list[str] = []
    if plan.create:
        wh.execute(ddl.create_table_sql(schema, table, plan.columns))
        created.append(name)
    for col in plan.add:
        wh.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            sql.Identifier(schema, table.name), sql.Identifier(col.name), sql.SQL(col.type)))
        altered.append(f"{name}: added column {col.name} {col.type}")
    if table.mode == "cdc" and table.history:
        from bronzeline.warehouse.cdc_apply import history_name, history_table_sql

        wh.execute(history_table_sql(schema, table.name, [(c.name, c.type) for c in plan.columns]))
        for col in plan.add:
            wh.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                sql.Identifier(schema, history_name(table.name)), sql.Identifier(col.name), sql.SQL(col.type)))
    if table.is_api:
        created += _api_tables(ctx, plan)
    if plan.rekey:
        wh.execute(ddl.set_primary_key_sql(schema, table.name, table.key, plan.old_key))
        old = ", ".join(plan.old_key.columns) if plan.old_key else "none"
        altered.append(f"{name}: primary key ({old}) → ({', '.join(table.key)})")
    if table.mode == "incremental":
        ctx.control.seed_watermark(table.name)
        if table.watermark:
            # Incremental models read bronze by its watermark: an index makes that a range read. A btree,
            # not a BRIN: after a VACUUM new rows also fill gaps in old pages, which makes BRIN ranges wide.
            wh.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{table.name}_{table.watermark}_idx"[:63]), sql.Identifier(schema, table.name),
                sql.Identifier(table.watermark)))
    return created, altered


def _api_tables(ctx: Context, plan: TablePlan) -> list[str]:
    """An API or push table's raw twin, and its point geometry when the warehouse has PostGIS."""
    from bronzeline.sources.api.schema import schema_for
    from bronzeline.warehouse.api_load import geom_column_sql, raw_index_sql, raw_name, raw_table_sql

    wh, schema, table = ctx.warehouse, ctx.config.warehouse.bronze_schema, plan.table
    created = [] if ddl.bronze_columns(wh, schema, raw_name(table.name)) is not None else [
        f"{schema}.{raw_name(table.name)}"]
    wh.execute(raw_table_sql(schema, table.name))
    wh.execute(raw_index_sql(schema, table.name))
    point = schema_for(table.endpoint or "").point()
    if point is not None and plan.postgis:
        wh.execute(geom_column_sql(schema, table.name, point))
    return created
