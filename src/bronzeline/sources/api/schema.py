"""Endpoint schemas: the typed bronze columns of an API or push table and the mapping from one vendor
record to them, with the vendor's quirks fixed. Implementations register themselves in SCHEMAS by endpoint
name (sources/tracksolid/schemas.py, sources/push/schemas.py)."""

from __future__ import annotations

from typing import Any, Protocol

from bronzeline.sources.base import Column

# The columns of bronze.<name>_raw, and the extra columns of a load's stage (typed columns + these).
RAW_SUFFIX = "_raw"


class MappingError(ValueError):
    """A record that cannot be parsed or mapped: it lands in raw with this message and is counted."""


class EndpointSchema(Protocol):
    name: str

    def columns(self) -> list[Column]:
        """The typed bronze columns, in order (key and watermark columns among them, never NULL)."""

    def map(self, record: Any) -> dict[str, Any]:
        """The record's typed values by column name (missing → NULL): str, int, float, Decimal, bool, aware
        datetime, dict/list (jsonb) or None. Raises MappingError when the record cannot be used."""


SCHEMAS: dict[str, EndpointSchema] = {}


def register(schema: EndpointSchema) -> EndpointSchema:
    SCHEMAS[schema.name] = schema
    return schema
