"""The window a run reads, as a pure function (pipeline/window.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bronzeline.pipeline.window import plan_window, window_text
from bronzeline.sources.base import KeyRange, Window

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_first_run_reads_everything_up_to_the_bound() -> None:
    plan = plan_window(watermark=None, bound=T0)
    assert plan.window == Window(None, T0) and plan.advance and plan.runs


def test_next_run_starts_at_the_watermark() -> None:
    plan = plan_window(watermark=T0, bound=T0 + MIN)
    assert plan.window == Window(T0, T0 + MIN) and plan.advance


def test_a_bound_not_past_the_watermark_reads_nothing_and_never_rewinds() -> None:
    for bound in (T0, T0 - MIN):
        plan = plan_window(watermark=T0, bound=bound)
        assert plan.empty and not plan.runs


def test_lookback_rereads_below_the_watermark() -> None:
    plan = plan_window(watermark=T0, bound=T0 + MIN, lookback=timedelta(hours=2))
    assert plan.window == Window(T0 - timedelta(hours=2), T0 + MIN) and plan.advance


def test_lookback_on_a_first_run_changes_nothing() -> None:
    assert plan_window(watermark=None, bound=T0, lookback=timedelta(hours=2)).window == Window(None, T0)


def test_a_requested_window_leaves_the_watermark() -> None:
    plan = plan_window(watermark=T0, bound=T0 + 10 * MIN, requested=Window(T0 - 5 * MIN, T0 - MIN))
    assert plan.window == Window(T0 - 5 * MIN, T0 - MIN) and not plan.advance and plan.runs


def test_a_requested_window_is_capped_at_the_safe_bound() -> None:
    plan = plan_window(watermark=None, bound=T0, requested=Window(T0 - MIN, T0 + 5 * MIN))
    assert plan.window == Window(T0 - MIN, T0) and not plan.advance


def test_a_requested_window_above_the_bound_is_empty() -> None:
    plan = plan_window(watermark=None, bound=T0, requested=Window(T0 + MIN, T0 + 5 * MIN))
    assert plan.empty


def test_window_text() -> None:
    assert window_text(Window(None, None)) == "a full snapshot"
    assert window_text(Window(None, T0)) == f"(-infinity, {T0.isoformat()}]"


def test_window_text_names_the_chunk() -> None:
    end = datetime(2026, 1, 1, tzinfo=UTC)
    keys = KeyRange(("id",), ("10",), ("20",), chunk=2, of=4)
    assert window_text(Window(None, end, keys=keys)) == "(-infinity, 2026-01-01T00:00:00+00:00], chunk 2/4"
