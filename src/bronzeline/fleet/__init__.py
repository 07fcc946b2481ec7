"""The fleet-tracking reference project: the `tracksolid` source schema
(`schema`), a realistic simulator (`simulator`), the reference bronzeline.yml
(`config_text`, `reference.yml`) and an embedded PostgreSQL for the demo (`embedded`).

Submodules are imported on use: `python -m bronzeline.fleet.simulator` must not find the
simulator already imported by its package.
"""

from __future__ import annotations

from bronzeline.fleet.config_text import copy_models, reference_config_text, shipped_models_dir, write_demo_config

__all__ = ["copy_models", "reference_config_text", "shipped_models_dir", "write_demo_config"]
