"""Compare a source and its bronze copy by key ranges, without reading either whole into memory.

1. Bronze's key quantiles (from a block sample on large tables) split the key space into ranges of
   about `range_rows` rows (the first and the last range are open, so rows beyond bronze's smallest
   and largest keys are inside one).
2. Each range's digest (row count and order-independent hash, sources/keyranges.py) is read on both
   sides at once, the source on a second thread. Equal digests: the range is done.
3. A differing range larger than `leaf_rows` (on either side) is split by the quantiles of the side
   that has more rows in it into parts of `leaf_rows` rows (at most `fanout` parts), and each part is
   compared again.
4. A differing range of at most `leaf_rows` rows is read key by key (keys and row hashes only) on both
   sides and diffed: keys only at the source are missing, keys only in bronze extra, keys on both sides
   with different hashes changed.
5. A key found missing in one range and extra in another (the two sides' collations order text keys
   differently) is the same row: equal hashes cancel out, different ones are a change.

Memory holds the differences (up to `max_differences`) and one small range's keys at a time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bronzeline.errors import Terminal
from bronzeline.sources.base import Key, KeyRanges, KeySpan

# table, ranges compared, ranges known so far, source rows compared
Progress = Callable[[str, int, int, int], None]


class TooManyDifferences(Terminal):
    """Bronze differs from the source in more rows than a comparison keeps in memory."""


@dataclass(frozen=True)
class Options:
    range_rows: int = 100_000  # rows per first-level range
    leaf_rows: int = 1_000  # a differing range this small is compared key by key
    fanout: int = 128  # a larger differing range is split into at most this many parts (of >= leaf_rows)
    list_cap: int = 10_000  # keys listed per kind of difference in the report
    max_differences: int = 1_000_000  # beyond this many differing keys, stop
    progress_seconds: float = 5.0  # how often progress is reported


@dataclass
class Differences:
    missing: dict[Key, str] = field(default_factory=dict)  # key -> row hash, at the source only
    extra: dict[Key, str] = field(default_factory=dict)  # in bronze only
    changed: set[Key] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)

    def settle(self) -> None:
        """A key missing in one range and extra in another is one row the sides placed apart."""
        for key in set(self.missing) & set(self.extra):
            if self.missing.pop(key) != self.extra.pop(key):
                self.changed.add(key)


@dataclass
class Comparison:
    differences: Differences
    ranges: int
    source_rows: int
    bronze_rows: int


def split(low: Key | None, bounds: list[Key], high: Key | None) -> list[KeySpan]:
    """(low, b1], (b1, b2], …, (bn, high]; a last boundary equal to `high` adds no empty range."""
    if bounds and bounds[-1] == high:
        bounds = bounds[:-1]
    edges: list[Key | None] = [low, *bounds, high]
    return [KeySpan(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def compare(table: str, source: KeyRanges, bronze: KeyRanges, options: Options,
            on_progress: Progress | None = None, first_bounds: list[Key] | None = None) -> Comparison:
    """Walk the ranges (see the module's docstring); raises TooManyDifferences past the limit.
    `first_bounds`: the first level's boundaries when the caller has them (e.g. from a sample)."""
    found = Differences()
    if first_bounds is None:
        first_bounds = bronze.quantiles(KeySpan(), options.range_rows)
    todo: deque[tuple[KeySpan, int]] = deque((r, 0) for r in split(None, first_bounds, None))
    known = len(todo)
    done = source_rows = bronze_rows = compared = 0
    next_report = time.monotonic() + options.progress_seconds
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bronzeline-reconcile") as pool:
        while todo:
            rng, depth = todo.popleft()
            at_source = pool.submit(source.digest, rng)
            ours = bronze.digest(rng)
            theirs = at_source.result()
            done += 1
            if depth == 0:
                source_rows += theirs.rows
                bronze_rows += ours.rows
            if theirs == ours:
                compared += theirs.rows
            elif max(theirs.rows, ours.rows) <= options.leaf_rows:
                at_source_rows = pool.submit(source.hashes, rng)
                _diff(at_source_rows.result(), bronze.hashes(rng), found)
                compared += theirs.rows
                if found.count > options.max_differences:
                    raise TooManyDifferences(
                        f"{table}: bronze differs from the source in more than {options.max_differences:,} rows; "
                        f"reload it (`bronzeline reseed {table}`, or for a snapshot table `bronzeline run {table}`) "
                        "and reconcile again")
            else:
                bigger = source if theirs.rows > ours.rows else bronze
                # Straight to leaf-sized parts when that is few enough parts: each level of splitting
                # hashes the range's rows again, so fewer levels cost less than fewer queries save.
                every = max(options.leaf_rows, math.ceil(max(theirs.rows, ours.rows) / max(2, options.fanout)))
                parts = split(rng.low, bigger.quantiles(rng, every), rng.high)
                todo.extend((p, depth + 1) for p in parts)
                known += len(parts)
            if on_progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + options.progress_seconds
                on_progress(table, done, known, compared)
    found.settle()
    return Comparison(found, done, source_rows, bronze_rows)


def _diff(source: dict[Key, str], bronze: dict[Key, str], found: Differences) -> None:
    for key, digest in source.items():
        other = bronze.pop(key, None)
        if other is None:
            found.missing[key] = digest
        elif other != digest:
            found.changed.add(key)
    found.extra.update(bronze)
