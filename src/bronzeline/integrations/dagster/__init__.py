"""Dagster definitions from `bronzeline plan` (the `dagster` extra). The code location is
`bronzeline.dagster` (`dagster dev -m bronzeline.dagster`)."""

from __future__ import annotations

from bronzeline.integrations.dagster.definitions import (
    asset_key,
    build_definitions,
    dagster_name,
    definitions_from_plan,
)

__all__ = ["asset_key", "build_definitions", "dagster_name", "definitions_from_plan"]
