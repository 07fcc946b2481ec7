"""The range walk of `reconcile` (reconcile/compare.py) over two in-memory sides: exact differences
whatever the range sizes, bounded key reads, and one row placed in different ranges by the two sides."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

import pytest

from bronzeline.reconcile.compare import Differences, Options, TooManyDifferences, compare, split
from bronzeline.reconcile.report import KeyList
from bronzeline.sources.base import Key, KeySpan, RangeDigest

Order = Callable[[Key], tuple[object, ...]]


def numeric(key: Key) -> tuple[object, ...]:
    return tuple(int(v) for v in key)


class Side:
    """A KeyRanges over a dict."""

    def __init__(self, rows: dict[Key, str], order: Order = numeric) -> None:
        self.rows = rows
        self.order = order
        self.largest_read = 0  # the most rows one hashes() call returned

    def _in(self, rng: KeySpan) -> list[Key]:
        keys = sorted(self.rows, key=self.order)
        return [k for k in keys if (rng.low is None or self.order(k) > self.order(rng.low))
                and (rng.high is None or self.order(k) <= self.order(rng.high))]

    def digest(self, rng: KeySpan) -> RangeDigest:
        keys = self._in(rng)
        total = sum(int(hashlib.md5(f"{k}{self.rows[k]}".encode()).hexdigest()[:16], 16) for k in keys)
        return RangeDigest(len(keys), total)

    def quantiles(self, rng: KeySpan, every: int) -> list[Key]:
        return self._in(rng)[every - 1::every]

    def hashes(self, rng: KeySpan) -> dict[Key, str]:
        found = {k: self.rows[k] for k in self._in(rng)}
        self.largest_read = max(self.largest_read, len(found))
        return found

    def present(self, keys: Sequence[Key]) -> set[Key]:
        return {k for k in keys if k in self.rows}

    def rows_of(self, keys: Sequence[Key]) -> Iterator[tuple[str | None, ...]]:
        return iter(())


def table(n: int) -> dict[Key, str]:
    return {(str(i),): f"v{i}" for i in range(1, n + 1)}


@pytest.mark.parametrize(("range_rows", "leaf_rows"), [(7, 3), (50, 10), (1000, 1000), (2, 1)])
def test_exact_differences_whatever_the_range_sizes(range_rows: int, leaf_rows: int) -> None:
    source = table(400)
    bronze = dict(source)
    for gone in (1, 2, 3, 150, 400):
        del source[(str(gone),)]
    for late in (401, 402, 5000):
        source[(str(late),)] = "late"
    for changed in (10, 11, 399):
        source[(str(changed),)] = "new value"
    at_source, in_bronze = Side(source), Side(bronze)
    found = compare("t", at_source, in_bronze, Options(range_rows=range_rows, leaf_rows=leaf_rows))
    diff = found.differences
    assert sorted(diff.missing, key=numeric) == [("401",), ("402",), ("5000",)]
    assert sorted(diff.extra, key=numeric) == [("1",), ("2",), ("3",), ("150",), ("400",)]
    assert sorted(diff.changed, key=numeric) == [("10",), ("11",), ("399",)]
    assert (found.source_rows, found.bronze_rows) == (398, 400)
    # keys are read only for ranges of at most leaf_rows rows on each side
    assert max(at_source.largest_read, in_bronze.largest_read) <= leaf_rows


def test_equal_sides_read_no_keys() -> None:
    at_source, in_bronze = Side(table(300)), Side(table(300))
    found = compare("t", at_source, in_bronze, Options(range_rows=20, leaf_rows=5))
    assert found.differences.count == 0 and found.ranges == 16
    assert at_source.largest_read == in_bronze.largest_read == 0


def test_an_empty_bronze_is_all_missing_and_split_by_the_source() -> None:
    at_source = Side(table(100))
    found = compare("t", at_source, Side({}), Options(range_rows=10, leaf_rows=4))
    assert len(found.differences.missing) == 100 and at_source.largest_read <= 4


def test_one_row_placed_in_different_ranges_by_the_two_sides_is_not_a_difference() -> None:
    found = Differences(missing={("a",): "h1", ("b",): "h2"}, extra={("a",): "h1", ("b",): "other", ("c",): "h3"})
    found.settle()
    assert (found.missing, found.extra, found.changed) == ({}, {("c",): "h3"}, {("b",)})


def test_too_many_differences_stop_the_walk() -> None:
    with pytest.raises(TooManyDifferences, match="more than 10 rows"):
        compare("t", Side(table(100)), Side({}), Options(range_rows=10, leaf_rows=10, max_differences=10))


def test_split_and_lists() -> None:
    assert split(None, [("5",), ("9",)], ("9",)) == [KeySpan(None, ("5",)), KeySpan(("5",), ("9",))]
    assert split(("1",), [], None) == [KeySpan(("1",), None)]
    listed = KeyList.of([("10",), ("9",), ("b",), ("a",)], cap=3)
    assert listed.keys == [("9",), ("10",), ("a",)] and listed.count == 4 and listed.capped
