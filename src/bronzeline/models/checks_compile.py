"""Checks as declared → SQL: what is wrong with a check (`validate_check`), the query for its failing
rows (`compile_check`), and the one-scan query that counts them (`count_query`, for models/checks.py).

Identifiers go through `sql.Identifier`, values through `sql.Literal`; `expression` and `where` are
SQL the user wrote, run as written inside parentheses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import sql

from bronzeline.config.models import parse_interval
from bronzeline.errors import ConfigError
from bronzeline.models.spec import CHECK_KINDS, CheckSpec

# Checks that judge the relation as a whole: `mostly` does not apply, one failing "row" at most.
TABLE_LEVEL = ("row_count", "freshness", "reconcile")
# Checks that judge each row on its own: on an incremental merge they need to read only the merged rows.
ROW_LEVEL = ("not_null", "accepted_values", "accepted_range", "expression_is_true", "relationships")
COLUMN_REQUIRED = ("not_null", "accepted_values", "relationships", "accepted_range")
SAMPLE_LIMIT = 10
_ARGS: dict[str, tuple[str, ...]] = {
    "not_null": (),
    "unique": ("columns", "combination_of_columns"),
    "accepted_values": ("values", "quote"),
    "relationships": ("to", "field"),
    "accepted_range": ("min_value", "max_value", "inclusive"),
    "expression_is_true": ("expression",),
    "row_count": ("min", "max"),
    "freshness": ("field", "warn_after", "error_after"),
    "reconcile": (),
}
_IGNORED_ARGS = ("name", "description", "config", "tags", "meta")  # dbt's, harmless here
_PERIODS = {"minute": 60, "hour": 3600, "day": 86400}
_REF = re.compile(r"""^\s*(ref|source)\s*\(\s*(['"])([^'"]+)\2\s*(?:,\s*(['"])([^'"]+)\4\s*)?\)\s*$""")


# ------------------------------------------------------------------------------------ arguments
def parse_age(value: Any) -> timedelta:
    """dbt's `{count: 12, period: hour}`, or an interval such as "12 hours" / "2h" / seconds."""
    if isinstance(value, dict):
        count, period = value.get("count"), str(value.get("period", "")).rstrip("s")
        if isinstance(count, bool) or not isinstance(count, int | float) or count <= 0 or period not in _PERIODS:
            raise ValueError(f"{value!r} is not an age; write e.g. {{count: 12, period: hour}} or '12 hours'")
        return timedelta(seconds=float(count) * _PERIODS[period])
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not an age; write e.g. {{count: 12, period: hour}} or '12 hours'")
    return parse_interval(value)


def parse_relation(text: str) -> tuple[str, str]:
    """`schema.name` → (schema, name); dbt's `ref('schema.name')` and `source('schema', 'name')` too."""
    match = _REF.match(text)
    if match:
        text = f"{match.group(3)}.{match.group(5)}" if match.group(5) else match.group(3)
    schema, dot, name = text.strip().partition(".")
    if not dot or not schema or not name or "." in name:
        raise ValueError(f"{text!r} is not a relation; write `schema.name` or ref('schema.name')")
    return schema, name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def unique_columns(spec: CheckSpec) -> list[str]:
    cols = spec.args.get("columns", spec.args.get("combination_of_columns"))
    if cols is not None:
        return [str(c) for c in cols] if isinstance(cols, list | tuple) else [str(cols)]
    return [spec.column] if spec.column else []


def _kind_problems(spec: CheckSpec) -> list[str]:
    """What is wrong with the kind's own arguments (the kind is known)."""
    a, kind, out = spec.args, spec.kind, []
    if kind in COLUMN_REQUIRED and not spec.column:
        out.append(f"{kind} is a column check; declare it under `columns: - name: …  data_tests:`")
    if kind == "unique":
        cols = a.get("columns", a.get("combination_of_columns"))
        if cols is None and not spec.column:
            out.append("unique needs a column (declare it under `columns:`) or `columns: [a, b]`")
        elif cols is not None and (not isinstance(cols, list) or not cols or
                                   not all(isinstance(c, str) and c for c in cols)):
            out.append("`columns` must be a non-empty list of column names")
    elif kind == "accepted_values":
        values = a.get("values")
        if not isinstance(values, list) or not values:
            out.append("accepted_values needs `values: [...]`, a non-empty list")
        elif any(v is None or isinstance(v, dict | list) for v in values):
            out.append("`values` must hold plain values (text, numbers, booleans)")
        if not isinstance(a.get("quote", True), bool):
            out.append("`quote` must be true or false")
    elif kind == "relationships":
        to, fld = a.get("to"), a.get("field")
        if not isinstance(to, str) or not to:
            out.append("relationships needs `to: schema.name` (or ref('schema.name'))")
        else:
            try:
                parse_relation(to)
            except ValueError as exc:
                out.append(f"`to`: {exc}")
        if not isinstance(fld, str) or not fld:
            out.append("relationships needs `field:`, the referenced column")
    elif kind == "accepted_range":
        if "min_value" not in a and "max_value" not in a:
            out.append("accepted_range needs `min_value`, `max_value` or both")
        for k in ("min_value", "max_value"):
            if k in a and (a[k] is None or isinstance(a[k], bool | dict | list)):
                out.append(f"`{k}` must be a number (or a date/time as text)")
        if not isinstance(a.get("inclusive", True), bool):
            out.append("`inclusive` must be true or false")
    elif kind == "expression_is_true":
        if not isinstance(a.get("expression"), str) or not str(a.get("expression")).strip():
            out.append("expression_is_true needs `expression:`, a SQL condition every row must meet")
    elif kind == "row_count":
        if spec.column:
            out.append("row_count is a table check; declare it under the model's own `data_tests:`")
        if "min" not in a and "max" not in a:
            out.append("row_count needs `min`, `max` or both")
        for k in ("min", "max"):
            if k in a and (not isinstance(a[k], int) or isinstance(a[k], bool) or a[k] < 0):
                out.append(f"`{k}` must be a whole number ≥ 0")
        if all(isinstance(a.get(k), int) for k in ("min", "max")) and a["min"] > a["max"]:
            out.append("`min` is above `max`")
    elif kind == "freshness":
        if not (a.get("field") or spec.column):
            out.append("freshness needs `field:`, the timestamp column that says when a row arrived")
        elif "field" in a and not isinstance(a["field"], str):
            out.append("`field` must be a column name")
        if "warn_after" not in a and "error_after" not in a:
            out.append("freshness needs `warn_after`, `error_after` or both, e.g. {count: 12, period: hour}")
        for k in ("warn_after", "error_after"):
            if k in a:
                try:
                    parse_age(a[k])
                except ValueError as exc:
                    out.append(f"`{k}`: {exc}")
    elif kind == "reconcile" and spec.where:
        out.append("reconcile compares whole tables up to the watermark and takes no `where`")
    if kind in TABLE_LEVEL and kind != "reconcile" and spec.mostly != 1.0:
        out.append(f"`mostly` does not apply to {kind}, which judges the table as a whole")
    unknown = sorted(set(a) - set(_ARGS[kind]) - set(_IGNORED_ARGS))
    if unknown:
        takes = ", ".join(_ARGS[kind]) or "no arguments besides severity, mostly and where"
        out.append(f"unknown argument(s) {', '.join(unknown)}; {kind} takes {takes}")
    return out


def validate_check(spec: CheckSpec) -> list[str]:
    """Problems with a check as declared, one lower-case line each naming its file and relation."""
    prefix = f"{spec.origin}: {spec.relation}: " if spec.origin else f"{spec.relation}: "
    if spec.kind not in CHECK_KINDS:
        on = f" on column {spec.column}" if spec.column else ""
        return [f"{prefix}unknown check {spec.kind!r}{on}; known checks: {', '.join(CHECK_KINDS)}"]
    problems: list[str] = []
    try:
        parse_relation(spec.relation)
    except ValueError as exc:
        problems.append(str(exc))
    problems += _kind_problems(spec)
    if not _is_number(spec.mostly) or not 0 < spec.mostly <= 1:
        problems.append(f"`mostly` must be a share of rows above 0 and at most 1, not {spec.mostly!r}")
    if spec.severity not in ("error", "warn"):
        problems.append(f"`severity` must be error or warn, not {spec.severity!r}")
    if spec.where is not None and (not isinstance(spec.where, str) or not spec.where.strip()):
        problems.append("`where` must be a SQL condition")
    return [f"{prefix}{spec.name}: {p}" for p in problems]


def _valid(spec: CheckSpec) -> None:
    problems = validate_check(spec)
    if problems:
        raise ConfigError(problems[0])


# ------------------------------------------------------------------------------------ SQL pieces
@dataclass(frozen=True)
class Parts:
    """The pieces every query of one check is made of."""

    spec: CheckSpec
    relation: sql.Identifier  # what is read: the target (e.g. a staging table) or spec.relation

    @property
    def checked(self) -> sql.Composed:
        """The checked rows as `t`; `where` applies to them alone (never to a referenced relation)."""
        if self.spec.where:
            return sql.SQL("(SELECT * FROM {} WHERE ({})) AS t").format(self.relation, sql.SQL(self.spec.where))
        return sql.SQL("{} AS t").format(self.relation)

    def col(self, name: str | None = None) -> sql.Identifier:
        return sql.Identifier("t", name or self.spec.column or "")

    @property
    def sample_row(self) -> sql.Composable:
        """A failing row as json: its key and the checked column, else the whole row."""
        names = list(self.spec.key)
        if self.spec.column and self.spec.column not in names:
            names.append(self.spec.column)
        if not names:
            return sql.SQL("to_jsonb(t.*)")  # t.*: a column named t would win over the bare alias
        return sql.SQL("jsonb_build_object({})").format(
            sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(n), self.col(n)) for n in names))


def _value(v: Any, quote: bool) -> sql.Composable:
    if quote:  # dbt quotes every value: a text literal, read as the column's type
        return sql.Literal(v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
    return sql.Literal(v) if not isinstance(v, str) else sql.SQL(v)  # unquoted text is SQL, as in dbt


def _predicate(p: Parts) -> sql.Composable | None:
    """The per-row failing condition of row-level kinds (None for the others)."""
    a, kind = p.spec.args, p.spec.kind
    if kind == "not_null":
        return sql.SQL("{} IS NULL").format(p.col())
    if kind == "accepted_values":
        quote = bool(a.get("quote", True))
        return sql.SQL("{} NOT IN ({})").format(p.col(), sql.SQL(", ").join(_value(v, quote) for v in a["values"]))
    if kind == "accepted_range":
        op_lo, op_hi = (">=", "<=") if a.get("inclusive", True) else (">", "<")
        bounds = [sql.SQL("{} {} {}").format(p.col(), sql.SQL(op), sql.Literal(a[k]))
                  for k, op in (("min_value", op_lo), ("max_value", op_hi)) if k in a]
        return sql.SQL("NOT ({})").format(sql.SQL(" AND ").join(bounds))
    if kind == "expression_is_true":
        if p.spec.column:  # dbt's column form: `<column> <expression>`
            return sql.SQL("NOT ({} {})").format(p.col(), sql.SQL(a["expression"]))
        return sql.SQL("NOT ({})").format(sql.SQL(a["expression"]))
    if kind == "relationships":
        return sql.SQL("{} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {} = {})").format(
            p.col(), _to(p), sql.Identifier("p", a["field"]), p.col())
    return None


def _to(p: Parts) -> sql.Identifier:
    return sql.Identifier(*parse_relation(str(p.spec.args["to"])))


def _unique_parts(p: Parts) -> tuple[sql.Composable, sql.Composable]:
    """(group-by list, "no column is NULL") for unique: NULLs are never duplicates, as in a unique index."""
    cols = [p.col(c) for c in unique_columns(p.spec)]
    return (sql.SQL(", ").join(cols),
            sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols))


def _age_bounds(p: Parts) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """freshness: (latest value, "error_after exceeded", "warn_after exceeded"); no rows is stale."""
    a = p.spec.args
    latest = sql.SQL("max({})").format(p.col(a.get("field") or p.spec.column))

    def exceeded(k: str) -> sql.Composable:
        if k not in a:
            return sql.SQL("false")
        return sql.SQL("({0} IS NULL OR {0} < now() - {1})").format(latest, sql.Literal(parse_age(a[k])))

    return latest, exceeded("error_after"), exceeded("warn_after")


def _row_count_fails(p: Parts) -> sql.Composable:
    a = p.spec.args
    bounds = [sql.SQL("count(*) {} {}").format(sql.SQL(op), sql.Literal(int(a[k])))
              for k, op in (("min", ">="), ("max", "<=")) if k in a]
    return sql.SQL("NOT ({})").format(sql.SQL(" AND ").join(bounds))


def parts(spec: CheckSpec, target: str | None) -> Parts:
    _valid(spec)
    try:
        schema, name = parse_relation(target or spec.relation)
    except ValueError as exc:
        raise ConfigError(f"{target}: {exc}") from exc
    return Parts(spec, sql.Identifier(schema, name))


# ------------------------------------------------------------------------------------ the queries
def compile_check(spec: CheckSpec, target: str | None = None) -> sql.Composed:
    """The query for the check's failing rows, read from `target` (`schema.name`) instead of
    spec.relation when given. Raises ConfigError when the check is not valid (see validate_check)."""
    p = parts(spec, target)
    pred = _predicate(p)
    if pred is not None:
        return sql.SQL("SELECT t.* FROM {} WHERE {}").format(p.checked, pred)
    if spec.kind == "unique":
        group, not_null = _unique_parts(p)
        return sql.SQL("SELECT {g}, count(*) AS n_records FROM {c} WHERE {nn} GROUP BY {g} HAVING count(*) > 1"
                       ).format(g=group, c=p.checked, nn=not_null)
    if spec.kind == "row_count":
        return sql.SQL("SELECT count(*) AS row_count FROM {} HAVING {}").format(p.checked, _row_count_fails(p))
    if spec.kind == "freshness":
        latest, error, warn = _age_bounds(p)
        stale = error if "error_after" in spec.args else warn
        return sql.SQL("SELECT {0} AS latest, now() - {0} AS age FROM {1} HAVING {2}").format(latest, p.checked, stale)
    # reconcile: the bronze side (the source's side is counted through the source)
    return sql.SQL("SELECT count(*) AS bronze_rows FROM {}").format(p.checked)


def count_query(spec: CheckSpec, target: str | None = None) -> sql.Composed:
    """One query → (total_rows, failing_rows, warned, sample json) with one scan of the relation; the
    sample (up to 10 failing rows) is read only when something failed. Not for reconcile."""
    p = parts(spec, target)
    pred = _predicate(p)
    limit = sql.Literal(SAMPLE_LIMIT)
    if spec.kind == "relationships":
        # a hash anti-join rather than a lookup per row; DISTINCT so a repeated parent key counts once
        counts = sql.SQL("SELECT count(*) AS total_rows, count(*) FILTER (WHERE {c} IS NOT NULL AND p.v IS NULL) "
                         "AS failing_rows, false AS warned FROM {t} LEFT JOIN (SELECT DISTINCT {f} AS v FROM {to}) "
                         "AS p ON p.v = {c}").format(c=p.col(), t=p.checked, f=sql.Identifier(spec.args["field"]),
                                                     to=_to(p))
    elif pred is not None:
        counts = sql.SQL("SELECT count(*) AS total_rows, count(*) FILTER (WHERE {}) AS failing_rows, "
                         "false AS warned FROM {}").format(pred, p.checked)
    elif spec.kind == "unique":
        group, not_null = _unique_parts(p)
        counts = sql.SQL(
            "SELECT coalesce(sum(g.n), 0)::bigint AS total_rows, coalesce(sum(g.n) FILTER (WHERE g.n > 1 AND "
            "g.keyed), 0)::bigint AS failing_rows, false AS warned FROM (SELECT count(*) AS n, {nn} AS keyed "
            "FROM {c} GROUP BY {g}) AS g").format(nn=not_null, c=p.checked, g=group)
        names = unique_columns(spec)
        dup = sql.SQL("jsonb_build_object({}, 'rows', count(*))").format(
            sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(n), p.col(n)) for n in names))
        sample = sql.SQL("SELECT {d} AS s FROM {c} WHERE {nn} GROUP BY {g} HAVING count(*) > 1 LIMIT {n}").format(
            d=dup, c=p.checked, nn=not_null, g=group, n=limit)
        return _with_sample(counts, sample)
    elif spec.kind == "row_count":
        obj = sql.SQL("jsonb_build_object('row_count', count(*), 'min', {}, 'max', {})").format(
            sql.Literal(spec.args.get("min")), sql.Literal(spec.args.get("max")))
        checked: sql.Composable = p.checked
        if "max" not in spec.args:
            # Only a minimum: stop counting once it is reached (total_rows is then "at least min").
            checked = sql.SQL("(SELECT 1 FROM {} LIMIT {}) AS t").format(p.checked, sql.Literal(int(spec.args["min"])))
        return sql.SQL("SELECT count(*) AS total_rows, CASE WHEN {f} THEN 1 ELSE 0 END AS failing_rows, false AS "
                       "warned, CASE WHEN {f} THEN jsonb_build_array({o}) ELSE '[]'::jsonb END AS sample FROM {c}"
                       ).format(f=_row_count_fails(p), o=obj, c=checked)
    elif spec.kind == "freshness":
        latest, error, warn = _age_bounds(p)
        ages = {k: str(parse_age(spec.args[k])) for k in ("warn_after", "error_after") if k in spec.args}
        obj = sql.SQL("jsonb_build_object('latest', {l}, 'age', (now() - {l})::text, 'warn_after', {w}, "
                      "'error_after', {e})").format(l=latest, w=sql.Literal(ages.get("warn_after")),
                                                    e=sql.Literal(ages.get("error_after")))
        return sql.SQL("SELECT count(*) AS total_rows, CASE WHEN {e} THEN 1 ELSE 0 END AS failing_rows, {w} AS "
                       "warned, CASE WHEN {e} OR {w} THEN jsonb_build_array({o}) ELSE '[]'::jsonb END AS sample "
                       "FROM {c}").format(e=error, w=warn, o=obj, c=p.checked)
    else:
        raise ConfigError(f"{spec.relation}: {spec.name} is not counted by a query in the warehouse")
    sample = sql.SQL("SELECT {} AS s FROM {} WHERE {} LIMIT {}").format(p.sample_row, p.checked, pred, limit)
    return _with_sample(counts, sample)


def _with_sample(counts: sql.Composable, sample: sql.Composable) -> sql.Composed:
    # The sample's subquery sits in a CASE branch: it runs only when a row failed, so a passing check
    # costs one scan.
    return sql.SQL("SELECT c.total_rows, c.failing_rows, c.warned, CASE WHEN c.failing_rows > 0 THEN "
                   "(SELECT coalesce(jsonb_agg(x.s), '[]'::jsonb) FROM ({}) AS x) ELSE '[]'::jsonb END AS sample "
                   "FROM ({}) AS c").format(sample, counts)
