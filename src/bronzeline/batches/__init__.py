"""Batch files in the object store: the exports/processed/failed area and its transitions."""

from bronzeline.batches.area import Area, AreaScan, Batch, BatchKeys, PendingCount

__all__ = ["Area", "AreaScan", "Batch", "BatchKeys", "PendingCount"]
