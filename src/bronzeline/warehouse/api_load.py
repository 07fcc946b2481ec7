"""Load one API or push batch in one transaction: COPY its stage (typed columns + raw columns), then the
records that mapped into bronze.<name> (deduplicated by key, newest fetch first) and every record into
bronze.<name>_raw (once per record id), the run row and the watermark. DDL for both tables is here too."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import BatchError
from bronzeline.faults import crash_point
from bronzeline.sources.api.schema import RAW_SUFFIX
from bronzeline.sources.api.stage import RAW_STAGE_COLUMNS, StageRows
from bronzeline.sources.base import Column
from bronzeline.store.batch import Manifest
from bronzeline.text import from_iso
from bronzeline.warehouse.loader import Conn, Loader, LoadResult, conflict_action, copy_csv

API_STAGE = "_bronzeline_api_stage"


def raw_name(table: str) -> str:
    return table + RAW_SUFFIX


def raw_table_sql(schema: str, table: str) -> sql.Composed:
    """bronze.<name>_raw: every record as fetched (or pushed), mapped or not; record_id is `<run>:<line>`
    for API records and `<push id>:<item>` for pushes."""
    return sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
  record_id  text PRIMARY KEY,
  run_id     bigint NOT NULL,
  record     jsonb,
  call       jsonb NOT NULL,
  fetched_at timestamptz NOT NULL,
  error      text
)""").format(sql.Identifier(schema, raw_name(table)))


def raw_index_sql(schema: str, table: str) -> sql.Composed:
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (fetched_at)").format(
        sql.Identifier(f"{raw_name(table)}_fetched_at_idx"[:63]), sql.Identifier(schema, raw_name(table)))


def geom_column_sql(schema: str, table: str, point: tuple[str, str]) -> sql.Composed:
    """A generated point from the typed coordinates (the platform sends 0,0 for an expired device: NULL)."""
    lng, lat = (sql.Identifier(c) for c in point)
    return sql.SQL(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS geom geometry(Point,4326) GENERATED ALWAYS AS "
        "(CASE WHEN {lng} IS NULL OR {lat} IS NULL OR ({lng} = 0 AND {lat} = 0) THEN NULL "
        "ELSE ST_SetSRID(ST_MakePoint({lng}::float8, {lat}::float8), 4326) END) STORED").format(
        sql.Identifier(schema, table), lng=lng, lat=lat)


def load_api(loader: Loader, table: TableConfig, data: StageRows, finalize: Callable[[], Manifest], *,
             advance: bool, where: str) -> LoadResult:
    conn = loader.conn
    bronze = sql.Identifier(loader.schema, table.name)
    raw = sql.Identifier(loader.schema, raw_name(table.name))
    duplicate = f"the batch {where} repeats a record id; it was not written by bronzeline"
    with loader.translated_errors(table, where, duplicate), conn.transaction():
        # The stage fills while the records arrive (the platform may make us wait); bronze and raw are locked
        # only for the merge at the end, so readers and a concurrent schema check are never held up by a poll.
        _create_stage(conn, data.schema.columns())
        copy_csv(conn, sql.Identifier(API_STAGE), data.columns, data)
        manifest = finalize()
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (loader.lock_timeout,))
        conn.execute(sql.SQL("LOCK TABLE {}, {} IN SHARE ROW EXCLUSIVE MODE").format(bronze, raw))
        if data.records != manifest.rows:
            raise BatchError(f"{table.name}: {where} holds {data.records} records, its manifest says {manifest.rows}")
        valid = data.records - data.invalid
        # A push's record id is its push id and item (the same push streamed twice is kept once); an API
        # record's is the run and the line (zero-padded: a batch's ids then append to the index in order).
        conn.execute(sql.SQL(
            "INSERT INTO {} (record_id, run_id, record, call, fetched_at, error) "
            "SELECT coalesce((__line->'call'->>'push_id') || ':' || coalesce(__line->'call'->>'item', '0'), "
            "%(run)s || ':' || lpad(__no::text, 9, '0')), %(run)s, __line->'record', "
            "coalesce(__line->'call', '{{}}'::jsonb), (__line->>'fetched_at')::timestamptz, __error FROM {} "
            "ON CONFLICT (record_id) DO NOTHING").format(raw, sql.Identifier(API_STAGE)), {"run": manifest.run_id})
        if table.mode == "snapshot":
            loaded, deleted = _replace(conn, table, bronze, data.typed, valid)
        else:
            loaded, deleted = _merge(conn, table, bronze, data.typed, table.on_conflict), None
        result = LoadResult(valid, loaded, valid - loaded, deleted, direct=False)
        crash_point("load")
        loader.control.mark_loaded(manifest.run_id, result.rows_extracted, result.rows_loaded,
                                   result.rows_skipped, result.rows_deleted, data.invalid)
        if table.mode == "incremental" and advance and manifest.window_end:
            # The first window starts `since` back, where no watermark stood yet: it sets the watermark.
            start = None if manifest.extra.get("first_window") else from_iso(manifest.window_start)
            loader.control.advance_watermark(table.name, start,
                                             datetime.fromisoformat(manifest.window_end), result.rows_loaded,
                                             manifest.run_id)
    return result


def _create_stage(conn: Conn, typed: list[Column]) -> None:
    stage = sql.Identifier(API_STAGE)
    cols = [sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in typed]
    cols += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in RAW_STAGE_COLUMNS]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage, sql.SQL(", ").join(cols)))


def _newest_per_key(table: TableConfig, cols: list[str]) -> sql.Composed:
    """The mapped records, one per key: the one fetched last (a later call saw the newer state)."""
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    return sql.SQL("SELECT DISTINCT ON ({key}) {cols} FROM {stage} WHERE __error IS NULL "
                   "ORDER BY {key}, __no DESC").format(key=key, cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                                                       stage=sql.Identifier(API_STAGE))


def _merge(conn: Conn, table: TableConfig, bronze: sql.Identifier, cols: list[str], on_conflict: str) -> int:
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} AS b ({}) {} ON CONFLICT ({}) {}").format(
            bronze, sql.SQL(", ").join(map(sql.Identifier, cols)), _newest_per_key(table, cols), key,
            conflict_action(table, cols, on_conflict)))
        return int(cur.rowcount)


def _replace(conn: Conn, table: TableConfig, bronze: sql.Identifier, cols: list[str], valid: int,
             ) -> tuple[int, int]:
    """A snapshot endpoint: bronze becomes the batch's records. A batch with no usable record leaves bronze
    as it is — an API that answers with an empty list is more likely failing than a fleet gone."""
    if valid == 0:
        return 0, 0
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = b.{0}").format(sql.Identifier(k)) for k in table.key)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} AS b WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE s.__error IS NULL "
                            "AND {})").format(bronze, sql.Identifier(API_STAGE), match))
        deleted = int(cur.rowcount)
    return _merge(conn, table, bronze, cols, "update"), deleted
