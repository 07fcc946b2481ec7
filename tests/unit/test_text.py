"""The one first-line, ISO and duration helper each (bronzeline.text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bronzeline.text import first_line, human_duration, iso


@pytest.mark.parametrize(("given", "expected"), [
    (ValueError("  bad thing\nDETAIL: more\n"), "bad thing"),
    (ValueError(""), "ValueError"),
    ("\n first\nsecond", "first"),
    ("", ""),
    (None, ""),
])
def test_first_line(given: BaseException | str | None, expected: str) -> None:
    assert first_line(given) == expected


def test_iso_keeps_the_offset_and_none() -> None:
    eat = timezone(timedelta(hours=3))
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=eat)) == "2026-01-02T03:04:05.000600+03:00"
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC), "minutes") == "2026-01-02T03:04+00:00"
    assert iso(None) is None


@pytest.mark.parametrize(("seconds", "expected"), [
    (None, "—"), (0, "0 s"), (59.4, "59 s"), (90, "1.5 min"), (7200, "2.0 h"), (3 * 86400, "3.0 d"),
    (-7200, "-2.0 h"),
])
def test_human_duration(seconds: float | None, expected: str) -> None:
    assert human_duration(seconds) == expected
