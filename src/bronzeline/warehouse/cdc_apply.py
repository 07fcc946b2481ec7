"""Apply one page of changes to bronze in ONE warehouse transaction: every table's change batch file is
COPYed into a temporary table and applied set-based — change lines (sources/cdc/lines.py) by their net
result per key (cdc_net.py), a planned file (store/change_batch.py) by a few statements per level — the
history appended, the run rows marked loaded and the slot's applied LSN
stored. A page at or below the stored LSN (a replay) changes nothing but its run rows, which count every
change as skipped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import BatchError, WarehouseError, WarehouseUnreachable
from bronzeline.faults import crash_point
from bronzeline.sources.cdc.changes import lsn_text
from bronzeline.sources.cdc.lines import LINE_META
from bronzeline.store.batch import Manifest
from bronzeline.store.change_batch import META_COLUMNS, OLD_PREFIX
from bronzeline.text import first_line
from bronzeline.warehouse import ddl
from bronzeline.warehouse.cdc_control import CdcControl
from bronzeline.warehouse.cdc_net import LAYOUT, LinesApply
from bronzeline.warehouse.control import Control
from bronzeline.warehouse.loader import LoadRejected, copy_csv

Conn = psycopg.Connection[Any]
HISTORY_SUFFIX = "__changes"
_META_TYPES = ("text", "pg_lsn", "integer", "timestamptz", "text", "integer", "text[]")


@dataclass
class PageFile:
    """One table's change batch of a page, ready to apply."""

    table: TableConfig
    manifest: Manifest
    data: Iterable[bytes]  # the stored file, read and verified against its manifest
    add_columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type) added before the apply


@dataclass(frozen=True)
class Applied:
    rows_extracted: int
    rows_loaded: int
    rows_skipped: int
    rows_deleted: int


def history_name(table: str) -> str:
    return table + HISTORY_SUFFIX


def history_table_sql(schema: str, table: str, columns: list[tuple[str, str]]) -> sql.Composed:
    """bronze.<name>__changes: every applied change, append-only, in commit order."""
    defs: list[sql.Composable] = [
        sql.SQL("op text NOT NULL"), sql.SQL("commit_lsn pg_lsn NOT NULL"), sql.SQL("seq integer NOT NULL"),
        sql.SQL("commit_time timestamptz NOT NULL"), sql.SQL("unchanged text[] NOT NULL DEFAULT '{}'"),
        sql.SQL("old_key jsonb")]
    defs += [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in columns]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(schema, history_name(table)), sql.SQL(", ").join(defs))


class Applier:
    def __init__(self, conn: Conn, control_schema: str, project: str, bronze_schema: str, lock_timeout: str) -> None:
        self.conn = conn
        self.cdc = CdcControl(conn, control_schema)
        self.control = Control(conn, control_schema, project)
        self.schema = bronze_schema
        self.lock_timeout = lock_timeout

    def apply_page(self, slot: str, files: list[PageFile], end_lsn: int, commit_time: datetime | None
                   ) -> dict[str, Applied]:
        """All of the page or nothing. Raises LoadRejected when the warehouse refuses a file's content."""
        names = ", ".join(f.table.name for f in files)
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
                state = self.cdc.slot(slot, for_update=True)
                replay = state is not None and state.applied_lsn is not None and end_lsn <= state.applied_lsn
                results: dict[str, Applied] = {}
                for number, page_file in enumerate(files):
                    table = page_file.table
                    if replay:
                        rows = page_file.manifest.rows
                        results[table.name] = Applied(rows, 0, rows, 0)
                    else:
                        results[table.name] = self._apply_file(page_file, f"_bronzeline_changes_{number}")
                    result = results[table.name]
                    self.control.mark_loaded(page_file.manifest.run_id, result.rows_extracted, result.rows_loaded,
                                             result.rows_skipped, result.rows_deleted)
                    extra = page_file.manifest.extra
                    self.cdc.touch_watermark(table.name, _time(extra.get("last_commit_time")), result.rows_loaded,
                                             page_file.manifest.run_id)
                if not replay:
                    self.cdc.set_applied(slot, end_lsn, commit_time)
                crash_point("load")
        except psycopg.errors.LockNotAvailable:
            raise WarehouseError(f"{names}: a bronze table is locked by another session for longer than "
                                 f"lock_timeout ({self.lock_timeout}); run again later") from None
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.UndefinedColumn,
                psycopg.errors.BadCopyFileFormat) as exc:
            raise LoadRejected(f"{names}: changes up to commit LSN {lsn_text(end_lsn)} could not be applied: "
                               f"{first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise WarehouseUnreachable(f"{names}: the warehouse connection failed while applying changes ({exc}); "
                                       "nothing was committed, run again") from None
        return results

    # ------------------------------------------------------------------ one table's file
    def _bronze(self, table: TableConfig) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table.name))

    def _apply_file(self, page_file: PageFile, stage_name: str) -> Applied:
        table, manifest = page_file.table, page_file.manifest
        bronze = self._bronze(table)
        history = table.history
        for name, kind in page_file.add_columns:
            targets = [table.name] + ([history_name(table.name)] if history else [])
            for target in targets:
                self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    sql.Identifier(self.schema, target), sql.Identifier(name), sql.SQL(kind)))
        self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(bronze))
        types = {c.name: c.type for c in ddl.bronze_columns(self.conn, self.schema, table.name) or []}
        file_columns = manifest.column_names
        extra = manifest.extra
        lines = extra.get("layout") == LAYOUT
        meta = len(LINE_META) if lines else len(META_COLUMNS)
        data_columns = file_columns[meta:len(file_columns) - len(table.key)]
        missing = [c for c in data_columns if c not in types]
        if missing:
            raise BatchError(f"{table.name}: {self.schema}.{table.name} has no column {', '.join(missing)}; "
                             "run `bronzeline migrate`")
        stage = sql.Identifier(stage_name)
        if lines:
            history_table = sql.Identifier(self.schema, history_name(table.name)) if history else None
            try:
                deleted = LinesApply(self.conn, bronze, history_table, table, data_columns, types, stage).run(
                    page_file.data, manifest.rows, extra)
            except BatchError as exc:
                raise BatchError(f"{table.name}: {exc}") from None
            skipped = int(extra.get("skipped", 0))
            return Applied(manifest.rows, manifest.rows - skipped, skipped, deleted)
        col_types = list(zip(META_COLUMNS, _META_TYPES, strict=True))
        col_types += [(c, types[c]) for c in data_columns] + [(OLD_PREFIX + k, types[k]) for k in table.key]
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            stage, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in col_types)))
        rows = copy_csv(self.conn, stage, file_columns, page_file.data)
        if rows != manifest.rows:
            raise BatchError(f"{table.name}: a change batch holds {rows} rows, its manifest says {manifest.rows}")
        levels: dict[str, list[str]] = extra.get("levels", {})
        if len(levels) > 4:
            self.conn.execute(sql.SQL("CREATE INDEX ON {} (level)").format(stage))
        self.conn.execute(sql.SQL("ANALYZE {}").format(stage))
        if history:
            self._append_history(table, stage, data_columns)
        deleted = 0
        with self.conn.cursor() as cur:
            if extra.get("truncate"):
                cur.execute(sql.SQL("DELETE FROM {}").format(bronze))
                deleted += int(cur.rowcount)
            for level_text, kinds in sorted(levels.items(), key=lambda kv: int(kv[0])):
                deleted += self._apply_level(cur, table, stage, data_columns, int(level_text), set(kinds),
                                             partial=bool(extra.get("partial")))
        skipped = int(extra.get("skipped", 0))
        return Applied(rows, rows - skipped, skipped, deleted)

    def _append_history(self, table: TableConfig, stage: sql.Identifier, columns: list[str]) -> None:
        idents = sql.SQL(", ").join(map(sql.Identifier, columns))
        old_key = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, s.{}").format(sql.Literal(k), sql.Identifier(OLD_PREFIX + k)) for k in table.key))
        self.conn.execute(sql.SQL(
            "INSERT INTO {} (op, commit_lsn, seq, commit_time, unchanged, old_key, {}) "
            "SELECT s.op, s.commit_lsn, s.seq, s.commit_time, s.unchanged, "
            "CASE WHEN s.op = 'D' OR s.apply IN ('K', 'M') THEN {} END, {} FROM {} s "
            "WHERE s.apply <> 'S' ORDER BY s.commit_lsn, s.seq").format(
                sql.Identifier(self.schema, history_name(table.name)), idents, old_key,
                sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in columns), stage))

    def _apply_level(self, cur: psycopg.Cursor[Any], table: TableConfig, stage: sql.Identifier, columns: list[str],
                     level: int, kinds: set[str], *, partial: bool) -> int:
        """Within a level every change touches its own keys, so deletes, updates and upserts commute."""
        bronze = self._bronze(table)
        by_old_key = sql.SQL(" AND ").join(
            sql.SQL("b.{} = s.{}").format(sql.Identifier(k), sql.Identifier(OLD_PREFIX + k)) for k in table.key)
        deleted = 0
        if kinds & {"D", "M"}:
            cur.execute(sql.SQL("DELETE FROM {} b USING {} s WHERE s.level = %s AND s.apply IN ('D', 'M') AND {}")
                        .format(bronze, stage, by_old_key), (level,))
            deleted = int(cur.rowcount)
        if kinds & {"U", "K"}:
            if partial:  # unchanged TOAST values keep bronze's value
                sets = [sql.SQL("{0} = CASE WHEN {1} = ANY(s.unchanged) THEN b.{0} ELSE s.{0} END").format(
                    sql.Identifier(c), sql.Literal(c)) for c in columns]
            else:
                sets = [sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in columns]
            cur.execute(sql.SQL("UPDATE {} b SET {} FROM {} s WHERE s.level = %s AND s.apply IN ('U', 'K') AND {}")
                        .format(bronze, sql.SQL(", ").join(sets), stage, by_old_key), (level,))
        if kinds & {"I", "M"}:
            idents = sql.SQL(", ").join(map(sql.Identifier, columns))
            others = [c for c in columns if c not in table.key]
            action: sql.Composable = sql.SQL("DO NOTHING")
            if others:
                action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others))
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} s WHERE s.level = %s AND s.apply IN ('I', 'M') "
                                "ON CONFLICT ({}) {}").format(
                bronze, idents, idents, stage, sql.SQL(", ").join(map(sql.Identifier, table.key)), action), (level,))
        return deleted


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


__all__ = ["Applied", "Applier", "PageFile", "history_name", "history_table_sql"]
