"""Config: pydantic models and the loader."""

from __future__ import annotations

from bronzeline.config.loader import find_config, load_config
from bronzeline.config.models import (
    BlobConfig,
    Config,
    ConnectionConfig,
    TableConfig,
    WarehouseConfig,
    parse_interval,
)

__all__ = [
    "BlobConfig",
    "Config",
    "ConnectionConfig",
    "TableConfig",
    "WarehouseConfig",
    "find_config",
    "load_config",
    "parse_interval",
]
