"""An API or push batch file (JSON lines of ApiRecord) as the CSV a load COPYs into its stage: per record,
the typed columns its endpoint schema maps it to (empty when it cannot be mapped) and the raw columns
(record id, run, record, call, fetched_at, error). Streamed: memory does not grow with the batch."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.api.schema import EndpointSchema, MappingError

# The stage's raw columns, after the typed ones: (name, type).
RAW_STAGE_COLUMNS: list[tuple[str, str]] = [
    ("__no", "integer"), ("__record_id", "text"), ("__run_id", "bigint"), ("__record", "jsonb"),
    ("__call", "jsonb"), ("__fetched_at", "timestamptz"), ("__error", "text")]
_FLUSH = 1 << 18


def _field(value: Any) -> str:
    """One CSV field as PostgreSQL's COPY reads it: NULL unquoted and empty, everything else quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = _json(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MappingError(f"{value} is not a finite number")
        text = repr(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise MappingError(f"{value} is not a finite number")
        text = str(value)
    else:
        text = str(value)
    if "\x00" in text:
        raise MappingError("a value contains a NUL character")
    return '"' + text.replace('"', '""') + '"'


def _json(value: Any) -> str:
    # jsonb refuses \u0000: such a record is kept with the character replaced (and marked by the caller).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("\\u0000", "\\ufffd")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail.strip():
        yield tail


class StageRows:
    """Iterate to get the stage's CSV; afterwards `records` and `invalid` tell what was read."""

    def __init__(self, schema: EndpointSchema, chunks: Iterable[bytes], run_id: int) -> None:
        self.schema = schema
        self.chunks = chunks
        self.run_id = run_id
        self.typed = [c.name for c in schema.columns()]
        self.records = 0
        self.invalid = 0

    @property
    def columns(self) -> list[str]:
        return self.typed + [name for name, _ in RAW_STAGE_COLUMNS]

    def __iter__(self) -> Iterator[bytes]:
        out: list[str] = []
        size = 0
        for line in _lines(self.chunks):
            if not line.strip():
                continue
            self.records += 1
            row = self._row(self.records, line)
            out.append(row)
            size += len(row)
            if size >= _FLUSH:
                yield "".join(out).encode()
                out, size = [], 0
        if out:
            yield "".join(out).encode()

    def _row(self, no: int, line: bytes) -> str:
        record_id = f"{self.run_id}:{no}"
        try:
            item = ApiRecord.from_line(line)
        except (ValueError, TypeError) as exc:
            # Not a line bronzeline wrote (the manifest's checksum matched, so the writer made it): keep it.
            self.invalid += 1
            text = line.decode("utf-8", "replace")
            return self._csv([None] * len(self.typed), no, record_id, text, {}, None,
                             f"not a record line: {exc}")
        if "push_id" in item.call:
            record_id = f"{item.call['push_id']}:{item.call.get('item', 0)}"
        error = item.error
        typed: list[str] | None = None
        if error is None:
            try:
                values = self.schema.map(item.record, item.fetched_at)
                typed = [_field(values.get(name)) for name in self.typed]
            except MappingError as exc:
                error = str(exc) or "the record cannot be mapped"
        if error is None and "\\u0000" in _json(item.record):
            error = "the record contains a NUL character (kept as U+FFFD)"
        if error is not None:
            self.invalid += 1
            typed = None
        fields = typed if typed is not None else [""] * len(self.typed)
        return self._join(fields, no, record_id, item.record, item.call, item.fetched_at, error)

    def _csv(self, typed: list[Any], no: int, record_id: str, record: Any, call: dict[str, Any],
             fetched_at: datetime | None, error: str | None) -> str:
        return self._join([_field(v) for v in typed], no, record_id, record, call, fetched_at, error)

    def _join(self, typed: list[str], no: int, record_id: str, record: Any, call: dict[str, Any],
              fetched_at: datetime | None, error: str | None) -> str:
        raw = [_field(no), _field(record_id), _field(self.run_id), '"' + _json(record).replace('"', '""') + '"',
               '"' + _json(call).replace('"', '""') + '"', _field(fetched_at), _field(error)]
        return ",".join(typed + raw) + "\n"
