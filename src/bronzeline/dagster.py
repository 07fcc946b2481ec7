"""The Dagster code location: `dagster dev -m bronzeline.dagster`, with the config in $BRONZELINE_CONFIG
(the `dagster` extra: pip install "bronzeline[dagster]").

`defs` is built when Dagster first asks for it, so importing this module for `build_definitions` needs no
config file. The definitions themselves live in bronzeline/integrations/dagster/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bronzeline.extras import require

require("dagster", "dagster")

from bronzeline.integrations.dagster import (  # noqa: E402 - after the extra's check, for its one-line message
    asset_key,
    build_definitions,
    dagster_name,
    definitions_from_plan,
)

if TYPE_CHECKING:
    import dagster as dg

    defs: dg.Definitions

_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """`defs` on first use: Dagster's loader finds it through dir() and getattr()."""
    if name != "defs":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "defs" not in _built:
        _built["defs"] = build_definitions()
    return _built["defs"]


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])


__all__ = ["asset_key", "build_definitions", "dagster_name", "definitions_from_plan", "defs"]
