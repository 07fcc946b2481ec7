"""Endpoint schemas: the typed bronze columns of an API or push table and the mapping from one vendor
record to them, with the vendor's quirks fixed. Implementations register themselves in SCHEMAS by endpoint
name (sources/tracksolid/schemas.py, sources/push/schemas.py)."""

from __future__ import annotations

from datetime import datetime
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

    def map(self, record: Any, fetched_at: datetime) -> dict[str, Any]:
        """The record's typed values by column name (missing → NULL): str, int, float, Decimal, bool, aware
        datetime, dict/list (jsonb) or None. `fetched_at` is when the call returned it (for pushes: when the
        receiver spooled it — the `received_at` column). Raises MappingError when the record cannot be used."""

    def point(self) -> tuple[str, str] | None:
        """(longitude, latitude) column names when the table gets a `geom geometry(Point,4326)` column
        (computed by the warehouse when PostGIS is present), else None."""


SCHEMAS: dict[str, EndpointSchema] = {}


def register(schema: EndpointSchema) -> EndpointSchema:
    SCHEMAS[schema.name] = schema
    return schema


def schema_for(endpoint: str) -> EndpointSchema:
    """The schema of an endpoint (its module registers it on import)."""
    if endpoint not in SCHEMAS:
        import importlib

        for module in ("bronzeline.sources.tracksolid.schemas", "bronzeline.sources.push.schemas"):
            importlib.import_module(module)
    try:
        return SCHEMAS[endpoint]
    except KeyError:
        from bronzeline.errors import ConfigError

        raise ConfigError(f"endpoint {endpoint!r} has no schema; use one of {', '.join(sorted(SCHEMAS))}") from None
