"""`migrate`: control schema, bronze tables from the source's types, watermark rows, roles and grants,
and the assertions. Idempotent; every problem found is reported at once."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from bronzeline.context import Context
from bronzeline.errors import BronzelineError, MigrationError
from bronzeline.warehouse import ddl, migrations


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    for table in config.tables:
        try:
            source = ctx.source(table.source)
            columns = source.describe(table)
            problems += source.check(table, columns)
        except BronzelineError as exc:
            problems.append(str(exc))
            continue
        if table.mode == "incremental" and source.watermark_nullable(table):
            report.warnings.append(f"{table.name}: watermark column {table.watermark} is nullable; rows "
                                   "with a NULL watermark are never extracted (`verify` counts them)")
        if any(c.is_geometry for c in columns) and not postgis:
            problems.append(f"{table.name}: has geometry columns but the warehouse has no PostGIS; a DBA must "
                            f"run CREATE EXTENSION postgis in database {wh.info.dbname}")
            continue
        bronze = ddl.bronze_columns(wh, wcfg.bronze_schema, table.name)
        name = f"{wcfg.bronze_schema}.{table.name}"
        if bronze is None:
            try:
                wh.execute(ddl.create_table_sql(wcfg.bronze_schema, table, columns))
            except psycopg.Error as exc:
                problems.append(f"{table.name}: cannot create {name}: {str(exc).strip().splitlines()[0]}")
                continue
            report.created.append(name)
        else:
            diffs = ddl.column_differences(columns, bronze)
            added = [c for c in columns if c.name not in {b.name for b in bronze}]
            if added and table.schema_evolution == "add_columns":
                for col in added:
                    wh.execute(sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}").format(
                        sql.Identifier(wcfg.bronze_schema), sql.Identifier(table.name),
                        sql.Identifier(col.name), sql.SQL(col.type)))
                    report.altered.append(f"{name}: added column {col.name} {col.type}")
                diffs = [d for d in diffs if not any(d.startswith(f"column {c.name} (") for c in added)]
            if diffs:
                problems.append(f"{table.name}: the source and bronze differ: {'; '.join(diffs)}; run "
                                "`bronzeline drift` (or set schema_evolution: add_columns for new columns)")
        if table.key and not ddl.has_unique_on(wh, wcfg.bronze_schema, table.name, table.key):
            problems.append(f"{table.name}: {name} has no PRIMARY KEY or UNIQUE index on ({', '.join(table.key)}); "
                            "ON CONFLICT needs one — add it, or fix `key:`")
        if table.mode == "incremental":
            ctx.control.seed_watermark(table.name)
    if not problems and (wcfg.roles.owner or wcfg.roles.readonly):
        ddl.grant(wh, config)
    if problems:
        raise MigrationError(f"migrate found {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return report
