"""What `reconcile` found for one table (and what `--repair` did), for the CLI's text and JSON."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bronzeline.sources.base import Key, key_text
from bronzeline.text import iso

_INTEGER = re.compile(r"-?\d+")


def key_order(key: Key) -> tuple[tuple[int, int, str], ...]:
    """Integers in numeric order, other text in code-point order (for lists people read)."""
    return tuple((0, int(v), "") if _INTEGER.fullmatch(v) and len(v) < 40 else (1, 0, v) for v in key)


@dataclass(frozen=True)
class KeyList:
    """How many keys of one kind, and the first `cap` of them in key order."""

    count: int
    keys: list[Key]

    @classmethod
    def of(cls, keys: Iterable[Key], cap: int) -> KeyList:
        ordered = sorted(keys, key=key_order)
        return cls(len(ordered), ordered[:cap])

    @property
    def capped(self) -> bool:
        return self.count > len(self.keys)

    def as_json(self, columns: list[str]) -> dict[str, Any]:
        return {"count": self.count, "capped": self.capped,
                "keys": [dict(zip(columns, k, strict=True)) for k in self.keys]}


@dataclass(frozen=True)
class RepairResult:
    run_id: int
    file: str  # the batch, in processed/ once loaded
    rows_extracted: int  # rows read from the source (`u` lines)
    rows_loaded: int  # inserted or overwritten
    rows_skipped: int  # bronze already had them so
    rows_deleted: int

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "file": self.file, "rows_extracted": self.rows_extracted,
                "rows_loaded": self.rows_loaded, "rows_skipped": self.rows_skipped, "rows_deleted": self.rows_deleted}


@dataclass
class TableReport:
    table: str
    mode: str
    key: list[str]
    watermark: datetime | None  # incremental tables: rows compared up to this
    ranges: int = 0  # key ranges compared (every level of splitting)
    source_rows: int = 0  # rows in scope on each side
    bronze_rows: int = 0
    missing: KeyList = field(default_factory=lambda: KeyList(0, []))  # at the source, not in bronze
    extra: KeyList = field(default_factory=lambda: KeyList(0, []))  # in bronze, gone from the source
    changed: KeyList = field(default_factory=lambda: KeyList(0, []))  # on both sides, with different values
    beyond_watermark: int = 0  # bronze rows whose source row now lies past the watermark (the next run's)
    seconds: float = 0.0
    repair: RepairResult | None = None

    @property
    def differences(self) -> int:
        return self.missing.count + self.extra.count + self.changed.count

    @property
    def ok(self) -> bool:
        """Nothing differs, or the repair loaded every difference."""
        return self.differences == 0 or self.repair is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "mode": self.mode, "key": self.key, "watermark": iso(self.watermark),
            "ok": self.ok, "differences": self.differences, "ranges": self.ranges,
            "source_rows": self.source_rows, "bronze_rows": self.bronze_rows,
            "missing": self.missing.as_json(self.key), "extra": self.extra.as_json(self.key),
            "changed": self.changed.as_json(self.key), "beyond_watermark": self.beyond_watermark,
            "seconds": round(self.seconds, 3), "repair": self.repair.as_json() if self.repair else None}

    def lines(self, examples: int = 10) -> list[str]:
        """The text summary: one line, then per kind of difference up to `examples` keys, then the repair."""
        scope = f" up to watermark {iso(self.watermark)}" if self.watermark else ""
        head = (f"{self.table}: {self.ranges:,} key range(s), {self.source_rows:,} source and {self.bronze_rows:,} "
                f"bronze rows compared{scope} in {self.seconds:.2f}s: ")
        if not self.differences:
            head += "source and bronze agree"
        else:
            head += (f"{self.missing.count:,} missing, {self.extra.count:,} extra, {self.changed.count:,} "
                     "changed")
        out = [head]
        for label, found in (("missing", self.missing), ("extra", self.extra), ("changed", self.changed)):
            if found.count:
                shown = "; ".join(key_text(self.key, k) for k in found.keys[:examples])
                more = f" … and {found.count - min(examples, len(found.keys)):,} more" if found.count > examples else ""
                out.append(f"  {label}: {shown}{more}")
        if self.beyond_watermark:
            out.append(f"  {self.beyond_watermark:,} bronze row(s) whose source row now lies past the watermark "
                       "were left to the next run")
        if self.repair is not None:
            r = self.repair
            out.append(f"  repaired by run {r.run_id}: loaded {r.rows_loaded:,} of {r.rows_extracted:,} rows "
                       f"({r.rows_skipped:,} already present), {r.rows_deleted:,} deleted; batch {r.file}")
        elif self.differences:
            out.append(f"  run `bronzeline reconcile {self.table} --repair` to load the missing and changed rows "
                       "and delete the extra ones")
        return out
