"""bronzeline: extract -> object store -> transactional load, every row accounted for."""

from __future__ import annotations

__version__ = "0.1.0"
