"""The load's hot path: a RecordSchema compiled into one function from a vendor record to the typed part of
a stage CSV row. Per column it takes a short road for the shapes the platform really sends (a float
coordinate, a `yyyy-MM-dd HH:mm:ss` time, a digit string) and hands anything else to the schema's own
converter, so the text PostgreSQL receives is exactly what `RecordSchema.map` gives (a unit test holds the
two to the same bytes over the schemas' test records and the fake's)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from bronzeline.sources.api import fields as f
from bronzeline.sources.api.schema import MappingError

# A compiled column: the record (prepared) -> its CSV field ("" for NULL, else quoted text).
Column = Callable[[dict[str, Any]], str]
Row = Callable[[Any, datetime], str]
_NUMERIC_MAX = 1e15


def csv_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def value_field(value: Any) -> str:
    """A typed value (as the schema's converters return them) as a CSV field: NULL unquoted and empty, numbers,
    flags and times unquoted (they never hold a delimiter), text and JSON quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MappingError(f"{value} is not a finite number")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MappingError(f"{value} is not a finite number")
        return str(value)
    text = f.canonical_json(value) if isinstance(value, dict | list) else str(value)
    if "\x00" in text:
        raise MappingError("a value contains a NUL character")
    return csv_text(text)


def _fast_number(value: Any, bound: float) -> str | None:
    """The text of a plain JSON number within ±bound, as str(Decimal(str(value))) would give it; None for
    anything the slow road must judge (strings, exponents, bools, out of range). Never needs CSV quotes."""
    kind = type(value)
    if kind is float:
        if -bound <= value <= bound:  # NaN fails both comparisons
            text = repr(value)
            if "e" not in text and "n" not in text:
                return text
        return None
    if kind is int and -bound <= value <= bound:
        return str(value)
    return None


def _fast_time(value: Any) -> str | None:
    """`yyyy-MM-dd HH:mm:ss` (UTC) as the isoformat of the aware datetime the slow road makes."""
    if type(value) is str and len(value) == 19 and value[10] == " ":
        try:
            datetime.fromisoformat(value)  # validates the calendar (no 2026-02-30)
        except ValueError:
            return None
        return f"{value[:10]}T{value[11:]}+00:00"
    return None


def _fast_text(value: Any) -> str | None:
    kind = type(value)
    if kind is str and value.strip() and "\x00" not in value:
        try:
            value.encode("utf-8")  # a lone surrogate from a \ud800 escape: the slow road names it
        except UnicodeEncodeError:
            return None
        return '"' + str.replace(value, '"', '""') + '"'
    if kind is int:
        return '"' + str(value) + '"'
    return None


def _fast_imei(value: Any) -> str | None:
    if type(value) is str:
        return _fast_text(value.strip())
    return '"' + str(value) + '"' if type(value) is int else None


def _fast_whole(value: Any, bound: int) -> str | None:
    if type(value) is int and -bound <= value < bound:
        return str(value)
    return None


_FLAGS = {"1": "1", "0": "0", "ON": "1", "OFF": "0", "on": "1", "off": "0", "true": "1", "false": "0"}


def _fast_flag(value: Any) -> str | None:
    if type(value) is str:
        return _FLAGS.get(value)
    if type(value) is int and -(2**15) <= value < 2**15:
        return str(value)
    return None


# The schema converters with a short road, by identity: value -> the CSV field, or None for the slow road.
_SHORT: dict[Any, Callable[[Any], str | None]] = {
    f.text: _fast_text,
    f.imei: _fast_imei,
    f.decimal: lambda v: _fast_number(v, _NUMERIC_MAX * 0.999),
    f.latitude: lambda v: _fast_number(v, 90),
    f.longitude: lambda v: _fast_number(v, 180),
    f.smallint: lambda v: _fast_whole(v, 2**15),
    f.integer: lambda v: _fast_whole(v, 2**31),
    f.bigint: lambda v: _fast_whole(v, 2**63),
    f.flag: _fast_flag,
    f.timestamp: _fast_time,
}


def _slow(spec: f.Field) -> Callable[[str, Any], str]:
    """The schema's own converter for one present value, as a CSV field."""
    def field(name: str, raw: Any) -> str:
        if f.missing(raw):
            if spec.required:
                raise MappingError(f"{spec.names[0]} is missing")
            return ""
        return value_field(spec.convert(name, raw))
    return field


def _generic(spec: f.Field) -> Column:
    """A field read from several names or a nested one: the schema's own reading, converted the slow way."""
    def column(record: dict[str, Any]) -> str:
        return value_field(f.RecordSchema._read(spec, record))
    return column


class _Lazy(dict[str, Any]):
    """The typed values a Computed column asks for, converted the slow way on first use."""

    def __init__(self, record: dict[str, Any], fields: dict[str, f.Field]) -> None:
        super().__init__()
        self.record, self.fields = record, fields

    def __missing__(self, column: str) -> Any:
        value = f.RecordSchema._read(self.fields[column], self.record)
        self[column] = value
        return value


def compile_row(schema: Any) -> Row | None:
    """The typed CSV fields of a record, joined, for a RecordSchema (None for any other schema: the caller
    maps the slow way). Generated as one function per schema, so a record costs no call per column on the
    common road; raises MappingError exactly when `schema.map` does."""
    if not isinstance(schema, f.RecordSchema):
        return None
    scope: dict[str, Any] = {"MappingError": MappingError, "value_field": value_field, "Lazy": _Lazy,
                             "missing": f.missing}
    fields = {s.column: s for s in schema.specs if isinstance(s, f.Field)}
    body = ["def row(record, fetched_at):",
            "    if type(record) is not dict and not isinstance(record, dict):",
            f"        raise MappingError('a {schema.name} record must be a JSON object, not ' + type(record).__name__)"]
    if schema._prepare is not None:
        scope["prepare"] = schema._prepare
        body.append("    record = prepare(record)")
    body.append("    get = record.get")
    computed = [s for s in schema.specs if isinstance(s, f.Computed)]
    if computed:
        scope["fields"] = fields
        body.append("    values = Lazy(record, fields)")
    out = [f"c{i}" for i in range(len(schema.specs))]
    # Fields first, then the computed columns, as RecordSchema.map does (its errors come in that order).
    order = [i for i, s in enumerate(schema.specs) if isinstance(s, f.Field)]
    order += [i for i, s in enumerate(schema.specs) if isinstance(s, f.Computed)]
    for i in order:
        spec = schema.specs[i]
        var = f"c{i}"
        if isinstance(spec, f.Computed):
            scope[f"compute{i}"] = spec.compute
            body.append(f"    {var} = value_field(compute{i}(record, values, fetched_at))")
            continue
        short = _SHORT.get(spec.convert)
        if len(spec.names) != 1 or "." in spec.names[0] or short is None:
            scope[f"column{i}"] = _generic(spec)
            body.append(f"    {var} = column{i}(record)")
            continue
        scope[f"fast{i}"], scope[f"slow{i}"] = short, _slow(spec)
        name = spec.names[0]
        absent = f"raise MappingError({name + ' is missing'!r})" if spec.required else f"{var} = ''"
        body += [f"    v = get({name!r})",
                 "    if v is None or v == '':",
                 f"        {absent}",
                 "    else:",
                 f"        {var} = fast{i}(v)",
                 f"        if {var} is None:",
                 f"            {var} = slow{i}({name!r}, v)"]
    body.append("    return " + " + ',' + ".join(out))
    exec("\n".join(body), scope)
    return scope["row"]  # type: ignore[no-any-return]
