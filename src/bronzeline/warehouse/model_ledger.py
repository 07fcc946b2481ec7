"""The models ledger in the control schema: builds (`model_runs`), check results (`check_results`) and
incremental models' bounds (`model_watermarks`). All of its SQL is here; reads return dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ModelBuild:
    build_id: int
    model: str
    materialized: str
    status: str  # building | built | failed | blocked
    rows: int | None
    started_at: datetime
    finished_at: datetime | None
    error_message: str | None
    last_built_at: datetime | None = None


@dataclass(frozen=True)
class CheckRecord:
    result_id: int
    build_id: int | None
    check_name: str
    relation: str
    column_name: str | None
    severity: str
    status: str  # pass | warn | fail
    failing_rows: int
    total_rows: int
    sample: list[Any]
    error_message: str | None
    checked_at: datetime


class ModelLedger:
    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    # -- the build lock: one build of a model at a time, across processes
    def _lock_key(self, model: str) -> str:
        return f"bronzeline:model:{self.schema}:{model}"

    def try_lock(self, model: str) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                (self._lock_key(model),)).fetchone()
        return bool(row and row[0])

    def unlock(self, model: str) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self._lock_key(model),))

    # -- builds
    def start_build(self, model: str, materialized: str, *, full_refresh: bool = False) -> int:
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (model, materialized, status, full_refresh) VALUES (%s, %s, 'building', %s) "
                    "RETURNING build_id").format(self._t("model_runs")), (model, materialized, full_refresh)).fetchone()
        assert row is not None
        return int(row[0])

    def finish_build(self, build_id: int, status: str, *, rows: int | None = None, error: str | None = None,
                     window_start: datetime | None = None, window_end: datetime | None = None) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = %s, rows = %s, error_message = %s, window_start = %s, window_end = %s, "
                    "finished_at = clock_timestamp() WHERE build_id = %s").format(self._t("model_runs")),
            (status, rows, error[:4000] if error else None, window_start, window_end, build_id))

    def record_blocked(self, model: str, materialized: str, why: str) -> int:
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (model, materialized, status, finished_at, error_message) "
                    "VALUES (%s, %s, 'blocked', clock_timestamp(), %s) RETURNING build_id").format(
                self._t("model_runs")), (model, materialized, why[:4000])).fetchone()
        assert row is not None
        return int(row[0])

    def fail_stale_builds(self, model: str) -> None:
        """Builds left `building` by a process that died (the caller holds the model's lock)."""
        self.conn.execute(
            sql.SQL("UPDATE {} SET status = 'failed', finished_at = clock_timestamp(), error_message = "
                    "'the build stopped before it finished; the published version was kept' "
                    "WHERE model = %s AND status = 'building'").format(self._t("model_runs")), (model,))

    # -- incremental bounds
    def built_through(self, model: str) -> datetime | None:
        row = self.conn.execute(sql.SQL("SELECT built_through FROM {} WHERE model = %s").format(
            self._t("model_watermarks")), (model,)).fetchone()
        return None if row is None else row[0]

    def set_built_through(self, model: str, value: datetime | None) -> None:
        """Inside the build's transaction, so the bound moves with the merged rows."""
        self.conn.execute(
            sql.SQL("INSERT INTO {} (model, built_through) VALUES (%s, %s) ON CONFLICT (model) DO UPDATE "
                    "SET built_through = EXCLUDED.built_through, updated_at = now()").format(
                self._t("model_watermarks")), (model, value))

    # -- check results
    def record_check(self, *, build_id: int | None, check_name: str, relation: str, column: str | None,
                     severity: str, status: str, failing_rows: int, total_rows: int, sample: list[Any],
                     query: str, error: str | None = None) -> int:
        row = self.conn.execute(
            sql.SQL("INSERT INTO {} (build_id, check_name, relation, column_name, severity, status, failing_rows, "
                    "total_rows, sample, query, error_message) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING result_id").format(self._t("check_results")),
            (build_id, check_name, relation, column, severity, status, failing_rows, total_rows,
             json.dumps(sample[:10], default=str), query, error[:4000] if error else None)).fetchone()
        assert row is not None
        return int(row[0])

    # -- reads
    def latest_builds(self) -> dict[str, ModelBuild]:
        """model -> its latest build (with when it was last built successfully)."""
        rows = self.conn.execute(
            sql.SQL("SELECT DISTINCT ON (model) build_id, model, materialized, status, rows, started_at, finished_at, "
                    "error_message, (SELECT max(b.finished_at) FROM {t} b WHERE b.model = r.model AND "
                    "b.status = 'built') FROM {t} r ORDER BY model, build_id DESC").format(
                t=self._t("model_runs"))).fetchall()
        return {str(r[1]): ModelBuild(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], r[5], r[6], r[7], r[8])
                for r in rows}

    def latest_checks(self) -> list[CheckRecord]:
        """The latest result of every (relation, check, column)."""
        rows = self.conn.execute(
            sql.SQL("SELECT DISTINCT ON (relation, check_name, column_name) result_id, build_id, check_name, "
                    "relation, column_name, severity, status, failing_rows, total_rows, sample, error_message, "
                    "checked_at FROM {} ORDER BY relation, check_name, column_name, result_id DESC").format(
                self._t("check_results"))).fetchall()
        return [CheckRecord(int(r[0]), r[1], str(r[2]), str(r[3]), r[4], str(r[5]), str(r[6]), int(r[7]), int(r[8]),
                            list(r[9] or []), r[10], r[11]) for r in rows]

    def last_built_rows(self) -> dict[str, int | None]:
        """model -> the rows of its latest successful build: what a failed or blocked model still publishes."""
        rows = self.conn.execute(
            sql.SQL("SELECT DISTINCT ON (model) model, rows FROM {} WHERE status = 'built' "
                    "ORDER BY model, build_id DESC").format(self._t("model_runs"))).fetchall()
        return {str(r[0]): r[1] for r in rows}
