"""An API or push batch file (JSON lines of ApiRecord) as the CSV a load COPYs into its stage: per record,
the typed columns its endpoint schema maps it to (empty when it cannot be mapped), the line number, the line
itself (as jsonb: the load takes the record, the call and fetched_at from it in SQL, so nothing is encoded
twice) and the mapping error. Streamed: memory does not grow with the batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from bronzeline.sources.api.fast import compile_row, csv_text, value_field
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.api.schema import EndpointSchema, MappingError

# The stage's own columns, after the typed ones: (name, type).
RAW_STAGE_COLUMNS: list[tuple[str, str]] = [("__no", "integer"), ("__line", "jsonb"), ("__error", "text")]
_FLUSH = 1 << 18
_NUL = b"\\u0000"


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        parts = data.split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail.strip():
        yield tail


def slow_row(schema: EndpointSchema) -> Callable[[Any, datetime], str]:
    """The typed CSV fields through `schema.map`, joined (any EndpointSchema; the reference for the compiled
    road)."""
    names = [c.name for c in schema.columns()]

    def row(record: Any, fetched_at: datetime) -> str:
        values = schema.map(record, fetched_at)
        return ",".join(value_field(values.get(name)) for name in names)

    return row


class StageRows:
    """Iterate to get the stage's CSV; afterwards `records` and `invalid` tell what was read."""

    def __init__(self, schema: EndpointSchema, chunks: Iterable[bytes], run_id: int, *, compiled: bool = True,
                 ) -> None:
        self.schema = schema
        self.chunks = chunks
        self.run_id = run_id
        self.typed = [c.name for c in schema.columns()]
        self.records = 0
        self.invalid = 0
        self._row = (compile_row(schema) if compiled else None) or slow_row(schema)
        self._empty = ",".join([""] * len(self.typed))

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
            row = self._stage_row(self.records, line)
            out.append(row)
            size += len(row)
            if size >= _FLUSH:
                yield "".join(out).encode()
                out, size = [], 0
        if out:
            yield "".join(out).encode()

    def _stage_row(self, no: int, line: bytes) -> str:
        text = line.decode("utf-8", "replace")
        try:
            item = ApiRecord.from_line(line)
        except (ValueError, TypeError) as exc:
            # Not a line bronzeline wrote (the manifest's checksum matched, so the writer made it): keep it.
            self.invalid += 1
            wrapped = {"record": text, "call": {}, "fetched_at": datetime.now(UTC).isoformat()}
            return f"{self._empty},{no},{csv_text(json.dumps(wrapped))},{csv_text(f'not a record line: {exc}')}\n"
        error = item.error
        if _NUL in line:
            # jsonb refuses \u0000: the line is kept with the character replaced, and marked.
            text = text.replace("\\u0000", "\\ufffd")
            error = error or "the record contains a NUL character (kept as U+FFFD)"
        typed = self._empty
        if error is None:
            try:
                typed = self._row(item.record, item.fetched_at)
            except MappingError as exc:
                error = str(exc) or "the record cannot be mapped"
        if error is not None:
            self.invalid += 1
            typed = self._empty
        return f"{typed},{no},{csv_text(text)},{'' if error is None else csv_text(error)}\n"
