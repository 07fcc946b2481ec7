"""The fleet-tracking reference project: the `tracksolid` source schema
(`schema`), a realistic simulator (`simulator`), the reference bronzeline.yml
(`config_text`, `reference.yml`: a database block and an API and push block), an embedded PostgreSQL
for the demos (`embedded`), the demos (`demo`; `demo_api` and `demo_pushes` for `demo --api`) and a
fake of the Tracksolid platform (`jimi_fake`).

Submodules are imported on use: `python -m bronzeline.fleet.simulator` must not find the
simulator already imported by its package.
"""

from __future__ import annotations

from bronzeline.fleet.config_text import copy_models, reference_config_text, shipped_models_dir, write_demo_config

__all__ = ["copy_models", "reference_config_text", "shipped_models_dir", "write_demo_config"]
