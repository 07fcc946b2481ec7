"""Change batch files: one table's part of a page of decoded changes, as CSV, with the plan the warehouse
applies set-based (docs/cdc.md).

Each row is one change as the slot sent it: `op` (I, U, D, T), `commit_lsn`, `seq` (order within the
transaction), `commit_time`, then how it is applied — `apply` and `level` — then `unchanged` (the columns
whose value is only in bronze: an unchanged TOASTed value the page does not carry), the table's columns
(the new row; for a delete, its key) and `__old_<key>` (the key of the row it changes or deletes).

The plan makes a page a handful of statements instead of one per change. Changes to different keys
commute, and a run of changes to one key nets to its last one, once every value the earlier ones carried
is copied into it (an unchanged TOAST value filled from an earlier change of the row in the same page is
real data, so the history shows it too). So each key keeps one *surviving* change, and only changes
that move a row to another key need ordering: `level` orders them (all changes of one level touch
distinct keys), and a page without key changes is one level.

`apply`: I upsert the full row · U update by key, keeping `unchanged` columns · K update by old key
(the key changes, some values are only in bronze) · M delete the old key, upsert the full new row ·
D delete by key · T delete every row (applied first) · `-` superseded by a later change of the row ·
S skipped: committed at or below what is already applied (a replay) or inside the table's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bronzeline.sources.cdc.changes import UNCHANGED, Change, Value, lsn_text

META_COLUMNS = ("op", "commit_lsn", "seq", "commit_time", "apply", "level", "unchanged")
OLD_PREFIX = "__old_"
_CHUNK = 1 << 20

Key = tuple[str | None, ...]


@dataclass
class Planned:
    change: Change
    apply: str
    level: int
    values: dict[str, Value] = field(default_factory=dict)  # the new row, unchanged values filled when known
    old_key: Key | None = None

    @property
    def unchanged(self) -> list[str]:
        return [name for name, value in self.values.items() if value is UNCHANGED]


@dataclass
class TablePlan:
    """One table's changes of a page, planned."""

    rows: list[Planned]
    columns: list[str]  # the table's columns as the page's relation has them
    key: list[str]

    @property
    def skipped(self) -> int:
        return sum(1 for p in self.rows if p.apply == "S")

    @property
    def levels(self) -> dict[int, list[str]]:
        """Per level, the apply kinds present (the warehouse runs only the statements needed)."""
        found: dict[int, set[str]] = {}
        for p in self.rows:
            if p.apply not in "-S":
                found.setdefault(p.level, set()).add(p.apply)
        return {level: sorted(kinds) for level, kinds in sorted(found.items())}

    @property
    def first_lsn(self) -> int | None:
        return min((p.change.commit_lsn for p in self.rows), default=None)

    @property
    def last_lsn(self) -> int | None:
        return max((p.change.commit_lsn for p in self.rows), default=None)

    def file_columns(self) -> list[str]:
        return [*META_COLUMNS, *self.columns, *(OLD_PREFIX + k for k in self.key)]


def plan_table(changes: Sequence[Change], columns: list[str], key: list[str], skip_through: int | None
               ) -> TablePlan:
    """Plan one table's changes (in commit order). Changes committed at or below `skip_through` are
    marked S; the rest get their apply kind and level."""
    rows: list[Planned] = []
    known: dict[Key, dict[str, Value]] = {}  # what the page says of each row so far
    pending: dict[Key, Planned] = {}  # the latest surviving change of each key that a later one may replace
    top: dict[Key, int] = {}  # the highest level of any change touching each key

    def key_of(values: dict[str, str | None] | dict[str, Value]) -> Key:
        return tuple(None if (v := values.get(k)) is UNCHANGED else v for k in key)  # type: ignore[misc]

    for change in changes:
        if skip_through is not None and change.commit_lsn <= skip_through:
            rows.append(Planned(change, "S", 0, dict(change.new or {}), _old(change, key)))
            continue
        if change.op == "T":
            for earlier in rows:
                if earlier.apply != "S":
                    earlier.apply = "-"
            known.clear()
            pending.clear()
            top.clear()
            rows.append(Planned(change, "T", 0))
            continue
        if change.op == "D":
            old = _old(change, key)
            assert old is not None
            level = _replace_or_next(pending, top, old, replaceable=True)
            planned = Planned(change, "D", level, {k: v for k, v in zip(key, old, strict=True)}, old)
            known.pop(old, None)
            pending[old] = planned
            top[old] = max(top.get(old, 0), level)
            rows.append(planned)
            continue
        values: dict[str, Value] = change.new if change.new is not None else {}
        if any(v is UNCHANGED for v in values.values()) or len(values) < len(columns):
            values = dict(values)  # filled below: the change as decoded stays as it was
        new_key = key_of(values)
        old = _old(change, key) if change.op == "U" else None
        moved = old is not None and old != new_key
        source_key = old if moved and old is not None else new_key
        seen = known.get(source_key)
        if seen is not None:
            for name, value in values.items():
                if value is UNCHANGED and name in seen and seen[name] is not UNCHANGED:
                    values[name] = seen[name]
        for name in columns:  # a column the change lacks (added later in the page): only bronze knows it
            if name not in values:
                values[name] = None if change.op == "I" else UNCHANGED
        full = not any(v is UNCHANGED for v in values.values())
        if not moved:
            prior = pending.get(new_key)
            kind = "I" if full else "U"
            # An update of a row the page deleted keeps its place after the delete (it changes nothing).
            level = _replace_or_next(pending, top, new_key, replaceable=prior is None or prior.apply != "D" or full)
            planned = Planned(change, kind, level, values, new_key if change.op == "U" else None)
            known[new_key] = values  # never changed later: a later change fills its own copy
            pending[new_key] = planned
            top[new_key] = max(top.get(new_key, 0), level)
        else:
            assert old is not None
            prior = pending.get(old)
            if prior is not None and prior.apply in ("I", "U"):
                prior.apply = "-"  # the move carries every value it gave
            level = 1 + max(top.get(old, 0), top.get(new_key, 0))
            planned = Planned(change, "M" if full else "K", level, values, old)
            known.pop(old, None)
            known[new_key] = values
            pending.pop(old, None)
            pending.pop(new_key, None)  # a moved row is never replaced: later changes come after it
            top[old] = top[new_key] = level
        rows.append(planned)
    return TablePlan(rows, columns, key)


def _replace_or_next(pending: dict[Key, Planned], top: dict[Key, int], key_value: Key, *, replaceable: bool
                     ) -> int:
    """The level of a change to one key: the level of the change it replaces, or one above everything
    touching the key."""
    prior = pending.get(key_value)
    if prior is not None and replaceable and prior.apply in ("I", "U", "D"):
        prior.apply = "-"
        pending.pop(key_value)
        return prior.level
    return 1 + top.get(key_value, 0)


def _old(change: Change, key: list[str]) -> Key | None:
    if change.old_key is None:
        return None
    return tuple(change.old_key.get(k) for k in key)


# ---------------------------------------------------------------------------------------------- CSV
def _field(value: Value | int) -> str:
    if value is None or value is UNCHANGED:
        return ""
    text = str(value)
    return '"' + text.replace('"', '""') + '"'


def _array(names: list[str]) -> str:
    """A text[] literal, as a CSV field."""
    if not names:
        return '"{}"'
    inner = ",".join('"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in names)
    return '"{' + inner.replace('"', '""') + '}"'


def csv_chunks(plan: TablePlan) -> Iterator[bytes]:
    """The plan as CSV (NULL is an empty field, an empty string is `""`), in ~1 MB chunks."""
    buf: list[str] = []
    size = 0
    names = plan.columns
    no_key = ("",) * len(plan.key)
    times: dict[object, str] = {}  # one text per commit (a transaction's changes share it)
    for p in plan.rows:
        c = p.change
        values = p.values
        fields = [('"' + v.replace('"', '""') + '"') if v.__class__ is str else "" for v in map(values.get, names)]
        unchanged = _array([n for n in names if values.get(n) is UNCHANGED]) if "" in fields else '"{}"'
        old = no_key if p.old_key is None else [_field(v) for v in p.old_key]
        stamp = times.get(c.commit_lsn)
        if stamp is None:
            times.clear()
            stamp = times[c.commit_lsn] = f"{lsn_text(c.commit_lsn)},{c.commit_time.isoformat()}"
        lsn, _, when = stamp.partition(",")
        line = ",".join([c.op, lsn, str(c.seq), when, p.apply, str(p.level), unchanged, *fields, *old]) + "\n"
        buf.append(line)
        size += len(line)
        if size >= _CHUNK:
            yield "".join(buf).encode()
            buf.clear()
            size = 0
    if buf:
        yield "".join(buf).encode()
