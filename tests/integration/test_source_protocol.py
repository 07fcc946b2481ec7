"""The Source protocol as verify and the timeout use it: counts through the source, and a cancel of the
queries in flight (Context.cancel_all) from another thread."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest

from bronzeline.context import Context
from tests.integration.pipeline import Pipeline
from tests.integration.test_core import TABLES, setup

SLOW = """\
  - name: slow
    query: "SELECT g AS id, now() AS recorded_at FROM generate_series(1, 1) g, pg_sleep(30)"
    watermark: recorded_at
    key: [id]
"""


def test_counts_through_the_source(pipeline: Pipeline) -> None:
    setup(pipeline, rows=50)
    with Context(pipeline.config()) as ctx:
        table = ctx.config.table("position_history")
        source = ctx.source(table.source)
        clock = source.clock()
        assert source.count_rows(table) == 50
        assert source.count_rows(table, high=clock) == 50
        assert source.count_rows(table, low=clock, high=clock + timedelta(days=1)) == 0
        assert source.null_watermark_count(table) == 0
        assert source.watermark_indexes(table) == 1
        info = source.server_info()
        assert info is not None and not info.in_recovery
        seen = source.visibility()
        assert seen.read_all_stats and not seen.superuser


def test_cancel_all_ends_queries_in_flight_on_source_and_warehouse(pipeline: Pipeline) -> None:
    setup(pipeline, rows=1)
    pipeline.write_config(TABLES + SLOW)
    with Context(pipeline.config()) as ctx:
        source = ctx.source("source")
        slow = ctx.config.table("slow")
        errors: list[BaseException] = []

        def count() -> None:
            try:
                source.count_rows(slow)
            except BaseException as exc:
                errors.append(exc)

        def sleep() -> None:
            try:
                ctx.warehouse.execute("SELECT pg_sleep(30)")
            except BaseException as exc:
                errors.append(exc)

        ctx.warehouse.execute("SELECT 1")  # open it here: cancel_all never opens a connection
        threads = [threading.Thread(target=count), threading.Thread(target=sleep)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        ctx.cancel_all()
        for thread in threads:
            thread.join(timeout=15)
        assert time.monotonic() - start < 10
        assert len(errors) == 2 and all(isinstance(e, psycopg.errors.QueryCanceled) for e in errors), errors
        # the connections stay usable after a cancel
        assert source.count_rows(ctx.config.table("position_history")) == 1
        assert ctx.warehouse.execute("SELECT 1").fetchone() == (1,)


def test_cancel_without_queries_is_harmless(pipeline: Pipeline) -> None:
    setup(pipeline, rows=1)
    with Context(pipeline.config()) as ctx:
        ctx.cancel_all()  # nothing open: nothing to do
        source = ctx.source("source")
        source.cancel()
        source.close()
        source.cancel()  # closed: still no error
        with pytest.raises(psycopg.OperationalError):
            source.count_rows(ctx.config.table("position_history"))
