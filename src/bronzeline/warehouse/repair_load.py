"""Load a `reconcile --repair` batch: one transaction that upserts the rows the source has, deletes the
keys it no longer has, and marks the run loaded. The batch is an ordinary batch file (manifest, checksum,
exports/ → processed/); its manifest's mode is `reconcile` and its first column, `_bronzeline_op`, says
per line `u` (the row as the source has it: insert it, or overwrite bronze's differing copy) or `d`
(delete this key; only the key columns are filled).

Accounting: rows_extracted = the `u` rows (read from the source) = rows_loaded (inserted or changed) +
rows_skipped (bronze already had them so); rows_deleted = bronze rows deleted. The watermark never moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import BatchError
from bronzeline.faults import crash_point
from bronzeline.store.batch import Manifest
from bronzeline.warehouse.loader import STAGE, Loader, LoadResult

REPAIR_MODE = "reconcile"
OP_COLUMN = "_bronzeline_op"


def is_repair(manifest: Manifest) -> bool:
    return manifest.mode == REPAIR_MODE


def load_repair(loader: Loader, table: TableConfig, columns: list[str], data: Iterable[bytes],
                finalize: Callable[[], Manifest], *, advance: bool = False, where: str) -> LoadResult:
    """Like Loader.load, for a repair batch (`columns` starts with the op column; `advance` is ignored:
    a repair never moves the watermark)."""
    conn = loader.conn
    bronze = sql.Identifier(loader.schema, table.name)
    stage = sql.Identifier(STAGE)
    cols = [c for c in columns if c != OP_COLUMN]
    idents = sql.SQL(", ").join(map(sql.Identifier, cols))
    key = sql.SQL(", ").join(map(sql.Identifier, table.key))
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = b.{0}").format(sql.Identifier(k)) for k in table.key)
    others = [c for c in cols if c not in table.key]
    action: sql.Composable = sql.SQL("DO NOTHING")
    if others:
        # Overwrite whenever the text differs (exact for every type, json and geometry included); unlike
        # a run's update, whatever the watermark: the source's current row is the truth here.
        sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)
        old = sql.SQL(", ").join(sql.SQL("b.{}::text").format(sql.Identifier(c)) for c in others)
        new = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}::text").format(sql.Identifier(c)) for c in others)
        action = sql.SQL("DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})").format(sets, old, new)
    duplicate = f"run `bronzeline reconcile {table.name}` again (repair batch {where})"
    with loader.translated_errors(table, where, duplicate), conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (loader.lock_timeout,))
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(bronze))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
        # Not LIKE: `d` lines leave non-key columns NULL, and LIKE would copy their NOT NULL constraints.
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA").format(
            stage, bronze))
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(stage, sql.Identifier(OP_COLUMN)))
        lines = loader._copy_into(stage, columns, data)
        conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(stage, key))
        op = sql.Identifier(OP_COLUMN)
        counted = conn.execute(sql.SQL("SELECT count(*) FILTER (WHERE {0} = 'u'), count(*) FILTER (WHERE {0} = 'd') "
                                       "FROM {1}").format(op, stage)).fetchone()
        assert counted is not None
        upserts, deletes = int(counted[0]), int(counted[1])
        if upserts + deletes != lines:
            raise BatchError(f"{table.name}: {where} has lines whose {OP_COLUMN} is neither 'u' nor 'd'")
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} AS b USING {} AS s WHERE s.{} = 'd' AND {}").format(
                bronze, stage, op, match))
            deleted = int(cur.rowcount)
            cur.execute(sql.SQL("INSERT INTO {} AS b ({}) SELECT {} FROM {} WHERE {} = 'u' ON CONFLICT ({}) {}").format(
                bronze, idents, idents, stage, op, key, action))
            loaded = int(cur.rowcount)
        manifest = finalize()
        if lines != manifest.rows:
            raise BatchError(f"{table.name}: {where} holds {lines} lines, its manifest says {manifest.rows}")
        crash_point("load")
        loader.control.mark_loaded(manifest.run_id, upserts, loaded, upserts - loaded, deleted)
    return LoadResult(upserts, loaded, upserts - loaded, deleted, direct=False)
