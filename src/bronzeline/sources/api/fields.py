"""Typed bronze values from a vendor record, and the declarative schema the endpoint schemas are built from.

Every converter takes the vendor's field name (for the message) and the value as it came, and returns a value
PostgreSQL takes in COPY for the column type, or raises MappingError with a short message naming the field.
`None` and "" are "not given" (the platform sends both for an empty field) and become NULL."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from bronzeline.sources.api.schema import MappingError
from bronzeline.sources.base import Column

Convert = Callable[[str, Any], Any]

_SMALLINT = 2**15
_INTEGER = 2**31
_BIGINT = 2**63
# Unconstrained numeric takes far more, but no vendor figure has more than 15 integer digits or more than 30
# decimals: anything beyond is a broken value, and guarding here keeps COPY from refusing the whole batch.
_NUMERIC_MAX = Decimal("1e15")
_NUMERIC_MIN_EXPONENT = -30


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _check_text(name: str, value: str) -> str:
    if "\x00" in value:
        raise MappingError(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MappingError(f"{name} {_show(value)} is not valid unicode text") from None
    return value


def text(name: str, value: Any) -> str | None:
    """Text as sent; numbers as their JSON text; objects and arrays as compact JSON."""
    if missing(value):
        return None
    if isinstance(value, str):
        return _check_text(name, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return _check_text(name, repr(value))
    return _check_text(name, json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def imei(name: str, value: Any) -> str | None:
    """Always text: a number is turned back into its digits (never through a float that lost some)."""
    if missing(value):
        return None
    if isinstance(value, bool):
        raise MappingError(f"{name} {_show(value)} is not an IMEI")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        raise MappingError(f"{name} {_show(value)} is not an exact IMEI (it must be sent as text)")
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return f"{value:f}".split(".")[0]
        raise MappingError(f"{name} {_show(value)} is not an IMEI")
    if isinstance(value, str):
        return _check_text(name, value.strip())
    raise MappingError(f"{name} {_show(value)} is not an IMEI")


def decimal(name: str, value: Any) -> Decimal | None:
    """A finite decimal keeping the digits the vendor sent (a JSON float goes through its shortest text)."""
    return _number(name, value, _NUMERIC_MAX)


def _number(name: str, value: Any, limit: Decimal) -> Decimal | None:
    if missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise MappingError(f"{name} {_show(value)} is not a number")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise MappingError(f"{name} {_show(value)} is not a number") from None
    if not number.is_finite() or abs(number) >= limit:
        raise MappingError(f"{name} {_show(value)} is out of range")
    if number != 0 and number.as_tuple().exponent < _NUMERIC_MIN_EXPONENT:  # type: ignore[operator]
        raise MappingError(f"{name} {_show(value)} has too many decimals")
    return number


def _bounded(limit: Decimal) -> Convert:
    def convert(name: str, value: Any) -> Decimal | None:
        number = decimal(name, value)
        if number is not None and abs(number) > limit:
            raise MappingError(f"{name} {_show(value)} is out of range (-{limit}..{limit})")
        return number
    return convert


latitude: Convert = _bounded(Decimal(90))
longitude: Convert = _bounded(Decimal(180))


def _whole(bound: int, kind: str) -> Convert:
    def convert(name: str, value: Any) -> int | None:
        number = _number(name, value, Decimal(2 * bound))
        if number is None:
            return None
        if number != number.to_integral_value():
            raise MappingError(f"{name} {_show(value)} is not a whole number")
        whole = int(number)
        if not -bound <= whole < bound:
            raise MappingError(f"{name} {_show(value)} is out of range for {kind}")
        return whole
    return convert


smallint: Convert = _whole(_SMALLINT, "smallint")
integer: Convert = _whole(_INTEGER, "integer")
bigint: Convert = _whole(_BIGINT, "bigint")

_FLAG_WORDS = {"on": 1, "off": 0, "true": 1, "false": 0}


def flag(name: str, value: Any) -> int | None:
    """A 0/1 vendor flag as smallint: "1"/"0", 1/0, "ON"/"OFF", true/false. smallint, not boolean, because the
    platform sends the same fields as digits, words and numbers, and other codes (-1: unknown) must not be lost."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    return smallint(name, value)  # type: ignore[no-any-return]


_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?"
                   r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(name: str, value: Any) -> datetime | None:
    """An aware UTC datetime from the platform's `yyyy-MM-dd HH:mm:ss` (UTC), ISO 8601 with Z or an offset
    ("2022-12-10T01:05:33.000Z"), a bare date, or a Unix time in seconds or milliseconds (a JSON number)."""
    if missing(value):
        return None
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            seconds = float(value)
            return _EPOCH + timedelta(seconds=seconds / 1000 if abs(seconds) >= 1e11 else seconds)
        except (OverflowError, ValueError):
            raise MappingError(f"{name} {_show(value)} is not a time") from None
    found = _TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None:
        raise MappingError(f"{name} {_show(value)} is not a yyyy-MM-dd HH:mm:ss time")
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        tz = UTC if zone in (None, "Z") else _offset(zone)
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        stamp = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                         micro, tzinfo=tz)
        return stamp.astimezone(UTC)
    except (ValueError, OverflowError):
        raise MappingError(f"{name} {_show(value)} is not a valid time") from None


def _offset(zone: str) -> timezone:
    digits = zone[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return timezone(-delta if zone[0] == "-" else delta)


def jsonb(name: str, value: Any) -> Any:
    """A JSON value for a jsonb column; JSON text (the platform sends some objects as strings) is parsed."""
    if missing(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise MappingError(f"{name} is not JSON") from None
    check_json(name, value)
    return value


def check_json(name: str, value: Any) -> None:
    """jsonb refuses \\u0000 and unpaired surrogates anywhere in a document, and NaN/Infinity numbers."""
    if isinstance(value, str):
        _check_text(name, value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MappingError(f"{name} holds a number JSON cannot store")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(name, str(k))
            check_json(name, v)
    elif isinstance(value, list):
        for v in value:
            check_json(name, v)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 text as is: the same item gives the same text wherever it was spooled."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(value: Any) -> str:
    """md5 (hex) of the canonical JSON: the key of push items whose fields nobody documents."""
    try:
        data = canonical_json(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: jsonb would refuse the item too
        raise MappingError("the item holds text that is not valid unicode") from None
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Field:
    """One typed column filled from the first of `names` the record has (not null, not ""). A name with a dot
    reaches into a nested object ("msg.alarmTime")."""

    column: str
    type: str
    names: tuple[str, ...]
    convert: Convert
    required: bool = False  # key and watermark fields: missing → MappingError


Compute = Callable[[dict[str, Any], dict[str, Any], datetime], Any]  # (record, values so far, fetched_at)


@dataclass(frozen=True)
class Computed:
    """A column derived after the fields are read (distance_km, received_at, record_hash)."""

    column: str
    type: str
    compute: Compute


Prepare = Callable[[dict[str, Any]], dict[str, Any]]


def _lookup(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    head, dot, tail = name.partition(".")
    if dot and isinstance(record.get(head), dict):
        return _lookup(record[head], tail)
    return None


class RecordSchema:
    """An EndpointSchema from a list of Field/Computed specs."""

    def __init__(self, name: str, specs: Sequence[Field | Computed], *, point: tuple[str, str] | None = None,
                 prepare: Prepare | None = None) -> None:
        self.name = name
        self.specs = tuple(specs)
        self._point = point
        self._prepare = prepare
        names = [s.column for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: a column is listed twice")
        if point is not None and not set(point) <= set(names):
            raise ValueError(f"{name}: point columns {point} are not columns")

    def columns(self) -> list[Column]:
        return [Column(s.column, s.type, s.type) for s in self.specs]

    def point(self) -> tuple[str, str] | None:
        return self._point

    def map(self, record: Any, fetched_at: datetime) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise MappingError(f"a {self.name} record must be a JSON object, not {type(record).__name__}")
        if self._prepare is not None:
            record = self._prepare(record)
        values: dict[str, Any] = {}
        for spec in self.specs:
            if isinstance(spec, Field):
                values[spec.column] = self._read(spec, record)
        for spec in self.specs:
            if isinstance(spec, Computed):
                values[spec.column] = spec.compute(record, values, fetched_at)
        return {s.column: values[s.column] for s in self.specs}

    @staticmethod
    def _read(spec: Field, record: dict[str, Any]) -> Any:
        for name in spec.names:
            raw = _lookup(record, name)
            if not missing(raw):
                return spec.convert(name, raw)
        if spec.required:
            raise MappingError(f"{spec.names[0]} is missing")
        return None


def received_at(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> datetime:
    """When the receiver spooled the push (the watermark of push tables)."""
    if fetched_at.tzinfo is None:
        raise MappingError("fetched_at has no time zone")
    return fetched_at.astimezone(UTC)
