"""One table's change lines (sources/cdc/lines.py) applied to bronze set-based: the net result per key is
computed in the warehouse, so the client does no work per change (docs/cdc.md, "Each page").

In the temporary table the file is COPYed into:
1. *live* changes are those committed above `skip_through` (the rest is already applied, or in the table's
   snapshot); a truncate deletes every bronze row, and only the changes after the last one are *effective*;
2. an unchanged TOAST value is filled from the latest earlier change of the same key that carried the column
   (so the history shows the real value), when the page has one; otherwise it stays marked and bronze keeps
   its value — it never becomes NULL;
3. the history (`history: true`) gets every live change, in commit order;
4. each key's last effective change wins (an update that moves a row to another key also deletes its old key):
   keys whose last change is a delete are deleted, the rest upserted, and a row whose last change still has
   unchanged values is updated without touching those columns (never inserted with NULLs).
A key change whose unchanged values live under the old key never reaches this path (the planner's case).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.config.models import TableConfig
from bronzeline.errors import BatchError
from bronzeline.sources.cdc.changes import lsn_text
from bronzeline.sources.cdc.lines import LINE_META, OLD_PREFIX
from bronzeline.warehouse.loader import BoundedQueuedWriter

Conn = psycopg.Connection[Any]
LINE_TYPES = ("text", "pg_lsn", "integer", "timestamptz", "text[]")  # as the manifest describes the file
# In the temporary table commit_time and unchanged stay text: only the history (and a page with unchanged
# values) needs them parsed, and COPY is cheaper without. No ANALYZE either: the plans do not need it.
_STAGE_TYPES = ("text", "pg_lsn", "integer", "text", "text")
LAYOUT = "lines"  # manifest.extra["layout"] of a change batch in this layout (the planner's has none)


def _ids(names: Iterable[str], prefix: str = "s.") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(sql.Identifier(n)) for n in names)


class LinesApply:
    """Applies one stored change-lines file of a page; the caller holds the transaction and the table's lock."""

    def __init__(self, conn: Conn, bronze: sql.Composable, history: sql.Composable | None, table: TableConfig,
                 columns: list[str], types: dict[str, str], stage: sql.Identifier) -> None:
        self.conn = conn
        self.bronze = bronze
        self.history = history
        self.key = list(table.key)
        self.columns = columns
        self.types = types
        self.stage = stage
        self.olds = [OLD_PREFIX + k for k in self.key]
        self.params: dict[str, Any] = {}

    def run(self, data: Iterable[bytes], expected_rows: int, extra: dict[str, Any]) -> int:
        """COPY, fill, history, apply; returns the rows deleted from bronze."""
        self._create()
        rows = self._copy(data)
        if rows != expected_rows:
            raise BatchError(f"a change batch holds {rows} rows, its manifest says {expected_rows}")
        self.params = {"skip": lsn_text(int(extra.get("skip_through") or 0))}
        live = sql.SQL("s.commit_lsn > %(skip)s::pg_lsn")
        effective: sql.Composable = live
        deleted = 0
        if extra.get("truncate"):
            last = self.conn.execute(sql.SQL(
                "SELECT s.commit_lsn::text, s.seq FROM {} s WHERE s.op = 'T' AND {} "
                "ORDER BY s.commit_lsn DESC, s.seq DESC LIMIT 1").format(self.stage, live), self.params).fetchone()
            if last is not None:
                self.params.update(t_lsn=last[0], t_seq=last[1])
                deleted += int(self.conn.execute(sql.SQL("DELETE FROM {}").format(self.bronze)).rowcount)
                effective = sql.SQL("{} AND (s.commit_lsn, s.seq) > (%(t_lsn)s::pg_lsn, %(t_seq)s)").format(live)
        marked = [c for c in self.columns if c in set(extra.get("unchanged") or [])]
        if marked:
            self._fill(marked, live, "t_lsn" in self.params)
        if self.history is not None:
            self._history(live)
        return deleted + self._apply_net(effective, marked, bool(extra.get("moved")))

    def _create(self) -> None:
        col_types = list(zip(LINE_META, _STAGE_TYPES, strict=True))
        col_types += [(c, self.types[c]) for c in self.columns] + [(OLD_PREFIX + k, self.types[k]) for k in self.key]
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(self.stage, sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in col_types)))

    def _copy(self, data: Iterable[bytes]) -> int:
        names = [*LINE_META, *self.columns, *self.olds]
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(self.stage, sql.SQL(", ").join(map(sql.Identifier, names)))
        with self.conn.cursor() as cur:
            with cur.copy(query, writer=BoundedQueuedWriter(cur)) as copy:
                for chunk in data:
                    copy.write(chunk)
            return int(cur.rowcount)

    def _fill(self, marked: list[str], live: sql.Composable, truncated: bool) -> None:
        """Each marked value from the latest earlier change of its key that carried the column: a running
        count of carrying changes numbers the runs, and each run starts with the change that carried it."""
        keys = _ids(self.key)
        segment = sql.SQL("((s.commit_lsn, s.seq) > (%(t_lsn)s::pg_lsn, %(t_seq)s))" if truncated else "true")
        counts, values, sets, filled = [], [], [], []
        x_keys = _ids(self.key, "x.")
        for i, name in enumerate(marked):
            col, lit, g = sql.Identifier(name), sql.Literal(name), sql.Identifier(f"__g{i}")
            counts.append(sql.SQL("count(*) FILTER (WHERE NOT ({} = ANY(s.unchanged::text[]))) OVER w AS {}")
                          .format(lit, g))
            values.append(sql.SQL("CASE WHEN x.{g} > 0 THEN first_value(x.{c}) OVER (PARTITION BY {k}, x.__seg, x.{g} "
                                  "ORDER BY x.commit_lsn, x.seq) END AS {v}").format(
                g=g, c=col, k=x_keys, v=sql.Identifier(f"__v{i}")))
            sets.append(sql.SQL("{c} = CASE WHEN f.{g} > 0 AND {lit} = ANY(s.unchanged::text[]) THEN f.{v} "
                                "ELSE s.{c} END").format(c=col, g=g, lit=lit, v=sql.Identifier(f"__v{i}")))
            filled.append(sql.SQL("CASE WHEN f.{} > 0 THEN {} END").format(g, lit))
        self.conn.execute(sql.SQL(
            "UPDATE {stage} s SET {sets}, unchanged = ARRAY(SELECT u FROM unnest(s.unchanged::text[]) u "
            "  WHERE u <> ALL (array_remove(ARRAY[{filled}]::text[], NULL)))::text "
            "FROM (SELECT x.commit_lsn, x.seq, {gs}, {values} FROM ("
            "  SELECT s.commit_lsn, s.seq, {keys}, {segment} AS __seg, {cols}, {counts} FROM {stage} s "
            "  WHERE {live} AND s.op IN ('I', 'U') AND ({keys}) IN ("
            "    SELECT {keys} FROM {stage} s WHERE {live} AND s.unchanged <> '{{}}') "
            "  WINDOW w AS (PARTITION BY {keys}, {segment} ORDER BY s.commit_lsn, s.seq)) x) f "
            "WHERE s.commit_lsn = f.commit_lsn AND s.seq = f.seq AND s.unchanged <> '{{}}'").format(
                stage=self.stage, sets=sql.SQL(", ").join(sets), filled=sql.SQL(", ").join(filled),
                gs=sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(f"__g{i}")) for i in range(len(marked))),
                values=sql.SQL(", ").join(values), keys=keys, segment=segment, cols=_ids(marked),
                counts=sql.SQL(", ").join(counts), live=live), self.params)

    def _history(self, live: sql.Composable) -> None:
        assert self.history is not None
        old_key = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, s.{}").format(sql.Literal(k), sql.Identifier(OLD_PREFIX + k)) for k in self.key))
        self.conn.execute(sql.SQL(
            "INSERT INTO {} (op, commit_lsn, seq, commit_time, unchanged, old_key, {}) "
            "SELECT s.op, s.commit_lsn, s.seq, s.commit_time::timestamptz, s.unchanged::text[], "
            "CASE WHEN num_nonnulls({}) > 0 THEN {} END, {} FROM {} s WHERE {} ORDER BY s.commit_lsn, s.seq").format(
                self.history, _ids(self.columns, ""), _ids(self.olds), old_key, _ids(self.columns), self.stage, live),
            self.params)

    def _apply_net(self, effective: sql.Composable, marked: list[str], moved: bool) -> int:
        keys, others = self.key, [c for c in self.columns if c not in self.key]
        branches: list[sql.Composable] = [sql.SQL(
            "SELECT {}, s.commit_lsn, s.seq, s.op, {} s.unchanged FROM {} s "
            "WHERE {} AND s.op IN ('I', 'U', 'D')").format(
                _ids(keys), sql.SQL("").join(sql.SQL("s.{}, ").format(sql.Identifier(c)) for c in others),
                self.stage, effective)]
        if moved:  # an update to another key also ends the old key's row
            branches.append(sql.SQL(
                "SELECT {}, s.commit_lsn, s.seq, 'D', {} '{{}}' FROM {} s "
                "WHERE {} AND s.op = 'U' AND num_nonnulls({}) > 0").format(
                    _ids(self.olds), sql.SQL("NULL, " * len(others)), self.stage, effective, _ids(self.olds)))
        on_key = sql.SQL(" AND ").join(sql.SQL("b.{0} = n.{0}").format(sql.Identifier(k)) for k in keys)
        action: sql.Composable = sql.SQL("DO NOTHING")
        if others:
            action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others))
        parts: list[sql.Composable] = [sql.SQL(
            "WITH net AS MATERIALIZED (SELECT DISTINCT ON ({k}) * FROM ({e}) e "
            "ORDER BY {k}, commit_lsn DESC, seq DESC), "
            "gone AS (DELETE FROM {b} b USING net n WHERE n.op = 'D' AND {on} RETURNING 1), "
            "upserted AS (INSERT INTO {b} ({cols}) SELECT {n_cols} FROM net n "
            "WHERE n.op <> 'D' AND n.unchanged = '{{}}' "
            "ON CONFLICT ({k}) {action})").format(
                k=_ids(keys, ""), e=sql.SQL(" UNION ALL ").join(branches), b=self.bronze, on=on_key,
                cols=_ids(self.columns, ""), n_cols=_ids(self.columns, "n."), action=action)]
        if marked:  # what the page could not fill keeps bronze's value
            sets = [sql.SQL("{0} = CASE WHEN {1} = ANY(n.unchanged::text[]) THEN b.{0} ELSE n.{0} END").format(
                sql.Identifier(c), sql.Literal(c)) if c in marked else sql.SQL("{0} = n.{0}").format(sql.Identifier(c))
                for c in others]
            parts.append(sql.SQL(", kept AS (UPDATE {} b SET {} FROM net n WHERE n.op <> 'D' AND n.unchanged <> '{{}}' "
                                 "AND {})").format(self.bronze, sql.SQL(", ").join(sets), on_key))
        parts.append(sql.SQL(" SELECT count(*) FROM gone"))
        row = self.conn.execute(sql.Composed(parts), self.params).fetchone()
        return int(row[0]) if row else 0
