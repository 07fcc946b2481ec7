"""Reads of the control schema (the run ledger and the watermarks), each returning frozen dataclasses.

Every query against `<control>.extract_runs` / `extract_watermarks` lives here or in control.py (the
writes); status, verify, the page, /metrics, prune and the CLI read through these methods."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from bronzeline.text import iso

Conn = psycopg.Connection[Any]
RUN_STATUSES = ("extracting", "uploaded", "loaded", "failed")


@dataclass(frozen=True)
class Watermark:
    table_name: str
    last_extracted_at: datetime | None
    last_loaded_at: datetime | None


@dataclass(frozen=True)
class RunRecord:
    """One row of extract_runs, every column."""

    run_id: int
    table_name: str
    mode: str
    status: str
    window_start: datetime | None
    window_end: datetime | None
    source_clock: datetime | None
    oldest_xact_start: datetime | None
    holdback_seconds: float | None
    run_started_at: datetime
    uploaded_at: datetime | None
    run_finished_at: datetime | None
    rows_extracted: int | None
    rows_loaded: int | None
    rows_skipped: int | None
    rows_deleted: int | None
    csv_path: str | None
    bytes: int | None
    checksum: str | None
    attempts: int
    error_message: str | None
    lsn_start: str | None = None  # cdc runs: the commit LSNs the change batch covers
    lsn_end: str | None = None
    note: str | None = None  # e.g. what a cdc resync replaced
    rows_invalid: int = 0  # API and push runs: records that could not be mapped (kept in <name>_raw)

    @property
    def seconds(self) -> float | None:
        """How long the run took (None while it runs)."""
        if self.run_finished_at is None:
            return None
        return round((self.run_finished_at - self.run_started_at).total_seconds(), 3)

    def as_json(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class LedgerStatus:
    """What `status` shows of one table from the ledger (the store adds pending files)."""

    table: str
    watermark: datetime | None
    last_loaded_at: datetime | None
    rows_loaded_last_run: int | None
    rows_skipped_last_run: int | None
    failures_24h: int
    last_status: str | None
    last_error: str | None  # of the latest run, when it failed
    now: datetime  # the warehouse's clock, for lags
    rows_invalid_last_run: int | None = None  # API and push tables: records of the last load that did not map


@dataclass(frozen=True)
class LedgerTotals:
    """Runs by status and row totals of one table, for /metrics and the page."""

    table: str
    runs: dict[str, int] = field(hash=False)
    rows_inserted_total: int
    rows_skipped_total: int
    seconds_since_load: float | None
    last_run_seconds: float | None


@dataclass(frozen=True)
class LoadedRuns:
    loaded: int
    total: int
    last_loaded_run: int | None


@dataclass(frozen=True)
class FailureSummary:
    """Failed runs of one table started in the last 24 hours."""

    count: int
    last_run_id: int | None
    last_error: str | None


@dataclass(frozen=True)
class Unaccounted:
    run_id: int
    table_name: str
    rows_extracted: int | None
    rows_loaded: int | None
    rows_skipped: int | None


@dataclass(frozen=True)
class Accounting:
    runs_checked: int
    mismatched: list[Unaccounted] = field(hash=False)


@dataclass(frozen=True)
class Freshness:
    seconds_since_load: float | None
    watermark_age_seconds: float | None


@dataclass(frozen=True)
class Session:
    now: datetime
    user: str


_NOTHING = sql.SQL("")
_RUN_COLUMNS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(RunRecord))

_STATUS_SQL = """
SELECT t.name AS table,
       w.last_extracted_at AS watermark,
       (SELECT max(r.run_finished_at) FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded')
           AS last_loaded_at,
       (SELECT r.rows_loaded FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'
         ORDER BY r.run_id DESC LIMIT 1) AS rows_loaded_last_run,
       (SELECT r.rows_skipped FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'
         ORDER BY r.run_id DESC LIMIT 1) AS rows_skipped_last_run,
       (SELECT count(*) FROM {runs} r WHERE r.table_name = t.name AND r.status = 'failed'
         AND r.run_started_at > now() - interval '24 hours')::int AS failures_24h,
       l.status AS last_status,
       CASE WHEN l.status = 'failed' THEN l.error_message END AS last_error,
       now() AS now,
       (SELECT r.rows_invalid FROM {runs} r WHERE r.table_name = t.name AND r.status = 'loaded'
         ORDER BY r.run_id DESC LIMIT 1) AS rows_invalid_last_run
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, ord)
LEFT JOIN {wm} w ON w.table_name = t.name
LEFT JOIN LATERAL (SELECT r.status, r.error_message FROM {runs} r WHERE r.table_name = t.name
                   ORDER BY r.run_id DESC LIMIT 1) l ON true
ORDER BY t.ord
"""

_TOTALS_SQL = """
SELECT t.name AS table,
       count(r.run_id) FILTER (WHERE r.status = 'extracting') AS extracting,
       count(r.run_id) FILTER (WHERE r.status = 'uploaded') AS uploaded,
       count(r.run_id) FILTER (WHERE r.status = 'loaded') AS loaded,
       count(r.run_id) FILTER (WHERE r.status = 'failed') AS failed,
       coalesce(sum(r.rows_loaded) FILTER (WHERE r.status = 'loaded'), 0) AS rows_inserted,
       coalesce(sum(r.rows_skipped) FILTER (WHERE r.status = 'loaded'), 0) AS rows_skipped,
       extract(epoch FROM now() - max(r.run_finished_at) FILTER (WHERE r.status = 'loaded'))
           AS seconds_since_load,
       (SELECT extract(epoch FROM l.run_finished_at - l.run_started_at) FROM {runs} l
         WHERE l.table_name = t.name AND l.status = 'loaded' ORDER BY l.run_id DESC LIMIT 1)
           AS last_run_seconds
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, ord)
LEFT JOIN {runs} r ON r.table_name = t.name
GROUP BY t.name, t.ord
ORDER BY t.ord
"""


class ControlReader:
    """Reads of the control schema through one warehouse connection."""

    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def _runs(self, where: sql.Composable, params: tuple[Any, ...] | list[Any] = (),
              tail: sql.Composable = _NOTHING) -> list[RunRecord]:
        with self.conn.cursor(row_factory=class_row(RunRecord)) as cur:
            cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} {}").format(
                _RUN_COLUMNS, self._t("extract_runs"), where, tail), params)
            return cur.fetchall()

    # -- the schema itself
    def exists(self) -> bool:
        """Whether the control tables are there (migrate has run)."""
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                (self._t("extract_runs").as_string(self.conn),)).fetchone()
        return bool(row and row[0])

    def session(self) -> Session:
        """The warehouse's clock and the role this connection acts as."""
        row = self.conn.execute("SELECT now(), current_user").fetchone()
        assert row is not None
        return Session(row[0], str(row[1]))

    # -- watermarks
    def find_watermark(self, table: str) -> Watermark | None:
        row = self.conn.execute(
            sql.SQL("SELECT last_extracted_at, last_loaded_at FROM {} WHERE table_name = %s").format(
                self._t("extract_watermarks")), (table,)).fetchone()
        return None if row is None else Watermark(table, row[0], row[1])

    def watermark(self, table: str) -> Watermark:
        return self.find_watermark(table) or Watermark(table, None, None)

    # -- single runs
    def run_status(self, run_id: int) -> str | None:
        row = self.conn.execute(sql.SQL("SELECT status FROM {} WHERE run_id = %s").format(
            self._t("extract_runs")), (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def unfinished_runs(self, table: str) -> list[int]:
        rows = self.conn.execute(
            sql.SQL("SELECT run_id FROM {} WHERE table_name = %s AND status IN ('extracting', 'uploaded') "
                    "ORDER BY run_id").format(self._t("extract_runs")), (table,)).fetchall()
        return [int(r[0]) for r in rows]

    def runs_by_id(self, run_ids: list[int]) -> dict[int, RunRecord]:
        return {r.run_id: r for r in self._runs(sql.SQL("run_id = ANY(%s)"), (run_ids,))}

    def last_loaded_run(self, table: str) -> RunRecord | None:
        found = self._runs(sql.SQL("table_name = %s AND status = 'loaded'"), (table,),
                           sql.SQL("ORDER BY run_id DESC LIMIT 1"))
        return found[0] if found else None

    def last_started(self, tables: list[str]) -> dict[str, datetime]:
        """table -> when its latest run started, for the scheduler's catch-up."""
        rows = self.conn.execute(
            sql.SQL("SELECT table_name, max(run_started_at) FROM {} WHERE table_name = ANY(%s) "
                    "GROUP BY table_name").format(self._t("extract_runs")), (tables,)).fetchall()
        return {str(r[0]): r[1] for r in rows}

    # -- lists of runs
    def oldest_watermark(self, tables: list[str]) -> datetime:
        """The oldest watermark of `tables` (-infinity when one has none yet); now() when there are none:
        what an incremental model built on them may read up to."""
        row = self.conn.execute(
            sql.SQL("SELECT coalesce((SELECT min(coalesce(last_extracted_at, '-infinity')) FROM {} "
                    "WHERE table_name = ANY(%s)), now())").format(self._t("extract_watermarks")), (tables,)).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def recent_runs(self, table: str | None, limit: int, *, failed_only: bool = False) -> list[RunRecord]:
        """The latest runs (of one table, or all), newest first."""
        where: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if table:
            where.append(sql.SQL("table_name = %s"))
            params.append(table)
        if failed_only:
            where.append(sql.SQL("status = 'failed'"))
        params.append(limit)
        return self._runs(sql.SQL(" AND ").join(where), params, sql.SQL("ORDER BY run_id DESC LIMIT %s"))

    def finished_runs(self, tables: list[str], limit: int) -> list[RunRecord]:
        """The latest `limit` finished runs of these tables, oldest first (for the charts)."""
        newest = self._runs(sql.SQL("table_name = ANY(%s) AND run_finished_at IS NOT NULL"), (tables, limit),
                            sql.SQL("ORDER BY run_id DESC LIMIT %s"))
        return newest[::-1]

    def recent_failures(self, limit: int = 10, days: int = 7) -> list[RunRecord]:
        return self._runs(sql.SQL("status = 'failed' AND run_started_at > now() - make_interval(days => %s)"),
                          (days, limit), sql.SQL("ORDER BY run_id DESC LIMIT %s"))

    # -- per-table summaries
    def statuses(self, tables: list[str]) -> list[LedgerStatus]:
        """One LedgerStatus per name, in the order given (tables never run have empty fields)."""
        query = sql.SQL(_STATUS_SQL).format(runs=self._t("extract_runs"), wm=self._t("extract_watermarks"))
        with self.conn.cursor(row_factory=class_row(LedgerStatus)) as cur:
            cur.execute(query, (tables,))
            return cur.fetchall()

    def totals(self, tables: list[str]) -> list[LedgerTotals]:
        rows = self.conn.execute(sql.SQL(_TOTALS_SQL).format(runs=self._t("extract_runs")), (tables,)).fetchall()
        return [LedgerTotals(table=str(r[0]), runs={s: int(n) for s, n in zip(RUN_STATUSES, r[1:5], strict=True)},
                             rows_inserted_total=int(r[5]), rows_skipped_total=int(r[6]),
                             seconds_since_load=_seconds(r[7]), last_run_seconds=_seconds(r[8]))
                for r in rows]

    def loaded_runs(self, table: str) -> LoadedRuns:
        row = self.conn.execute(sql.SQL(
            "SELECT count(*) FILTER (WHERE status = 'loaded'), count(*), max(run_id) FILTER (WHERE status = 'loaded') "
            "FROM {} WHERE table_name = %s").format(self._t("extract_runs")), (table,)).fetchone()
        assert row is not None
        return LoadedRuns(int(row[0]), int(row[1]), None if row[2] is None else int(row[2]))

    def failures_24h(self, table: str) -> FailureSummary:
        row = self.conn.execute(sql.SQL(
            "SELECT count(*), max(run_id), (array_agg(error_message ORDER BY run_id DESC))[1] FROM {} "
            "WHERE table_name = %s AND status = 'failed' AND run_started_at > now() - interval '24 hours'").format(
            self._t("extract_runs")), (table,)).fetchone()
        assert row is not None
        return FailureSummary(int(row[0]), None if row[1] is None else int(row[1]), row[2])

    def freshness(self, table: str) -> Freshness:
        row = self.conn.execute(sql.SQL(
            "SELECT extract(epoch FROM now() - (SELECT max(run_finished_at) FROM {runs} "
            "  WHERE table_name = %s AND status = 'loaded')), "
            "extract(epoch FROM now() - (SELECT last_extracted_at FROM {wm} WHERE table_name = %s))").format(
            runs=self._t("extract_runs"), wm=self._t("extract_watermarks")), (table, table)).fetchone()
        assert row is not None
        return Freshness(None if row[0] is None else float(row[0]), None if row[1] is None else float(row[1]))

    def accounting(self) -> Accounting:
        """Runs with row counts whose rows_extracted is not rows_loaded + rows_skipped."""
        counted = "(status = 'loaded' OR rows_loaded IS NOT NULL OR rows_skipped IS NOT NULL)"
        runs = self._t("extract_runs")
        total = self.conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE " + counted).format(runs)).fetchone()
        rows = self.conn.execute(sql.SQL(
            "SELECT run_id, table_name, rows_extracted, rows_loaded, rows_skipped FROM {} WHERE " + counted +
            " AND rows_extracted IS DISTINCT FROM rows_loaded + rows_skipped ORDER BY run_id").format(runs)).fetchall()
        return Accounting(int(total[0]) if total else 0, [Unaccounted(*r) for r in rows])


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _json(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value
