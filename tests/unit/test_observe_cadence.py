"""Cadence from cron expressions: the longest gap between two runs, as verify's freshness limit uses it."""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.observe.cadence import DEFAULT_CADENCE, longest_gap, table_cadence, validate_cron


@pytest.mark.parametrize(("cron", "gap"), [
    ("0 5,8,11,14,17,20,23 * * *", timedelta(hours=6)),  # the overnight gap, 23:00 -> 05:00
    ("* * * * *", timedelta(minutes=1)),
    ("*/15 * * * *", timedelta(minutes=15)),
    ("30 2 * * *", timedelta(days=1)),
    ("0 3 * * 1-5", timedelta(days=3)),  # Friday -> Monday
    ("0 3 * * MON-FRI", timedelta(days=3)),
    ("0 9 * * 0,7", timedelta(days=7)),  # 0 and 7 are both Sunday
    ("0 0 1 * *", timedelta(days=31)),
    ("0 0 1 jan,jul *", timedelta(days=184)),
    ("0 0 1,15 * 1", timedelta(days=7)),  # day of month OR day of week, as cron does
    ("0-30/10 8-9 * * *", timedelta(hours=22, minutes=30)),
    # six fields: croniter's seconds, last — what `schedule` runs
    ("* * * * * */30", timedelta(seconds=30)),
    ("*/5 * * * * 0", timedelta(minutes=5)),
    ("0 * * * * 15,45", timedelta(minutes=59, seconds=30)),
    ("0 0 L * *", timedelta(days=31)),  # the last day of the month, as croniter reads `L`
    ("0 0 29 2 *", timedelta(days=4 * 365 + 1)),  # leap days only: 2024-02-29 -> 2028-02-29
    ("* * * 1 *", timedelta(days=335, minutes=1)),  # every minute of January, then nothing until the next
])
def test_longest_gap(cron: str, gap: timedelta) -> None:
    assert longest_gap(cron) == gap


def test_gaps_are_real_time_in_the_config_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # the night clocks go back (2024-10-27) lasts 25 hours
    assert longest_gap("0 2 * * *", tz=berlin) == timedelta(hours=25)
    assert longest_gap("0 2 * * *", tz=ZoneInfo("Africa/Nairobi")) == timedelta(days=1)


def test_dense_crons_are_fast() -> None:
    began = time.perf_counter()
    for cron in ("* * * * * *", "* * * * * */30", "*/5 9-17 * * 1-5", "* * * 1,7 *"):
        longest_gap(cron, tz=ZoneInfo("America/New_York"))
    assert time.perf_counter() - began < 1.0


@pytest.mark.parametrize("cron", ["* * * * * */30", "0 5,8,11 * * *", "0 0 L * *", "0 9 * * MON-FRI"])
def test_validate_cron_accepts_what_croniter_reads(cron: str) -> None:
    assert validate_cron(cron) == cron


@pytest.mark.parametrize("cron", ["* * * *", "61 * * * *", "* * * * * * *", "@hourly", "every hour"])
def test_validate_cron_refuses_the_rest(cron: str) -> None:
    with pytest.raises(ValueError, match="five fields"):
        validate_cron(cron)


def test_six_field_cron_in_the_config_gives_its_cadence() -> None:
    config = Config.model_validate({
        "project": "p", "connections": {"source": {"dsn": "host=/tmp"}, "warehouse": {"dsn": "host=/tmp"}},
        "blob": {"url": "file://./blob"}, "schedule": {"cron": "* * * * * */30"},
        "tables": [{"name": "a", "from": "s.a", "watermark": "t", "key": ["id"]}]})
    assert table_cadence(config, config.tables[0]).interval == timedelta(seconds=30)


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * *", "0 0 31 2 *", "x * * * *", "*/0 * * * *"])
def test_unreadable_or_never_firing_cron_is_a_config_error(cron: str) -> None:
    with pytest.raises(ConfigError, match="cron"):
        longest_gap(cron)


def test_table_cron_wins_over_schedule_over_default() -> None:
    base = {"project": "p", "connections": {"source": {"dsn": "host=/tmp"}, "warehouse": {"dsn": "host=/tmp"}},
            "blob": {"url": "file://./blob"},
            "tables": [{"name": "a", "from": "s.a", "watermark": "t", "key": ["id"], "cron": "*/5 * * * *"},
                       {"name": "b", "from": "s.b", "mode": "snapshot"}]}
    config = Config.model_validate(base)
    a, b = config.tables
    assert table_cadence(config, a).interval == timedelta(minutes=5) and "tables[a]" in table_cadence(config, a).origin
    assert table_cadence(config, b).interval == DEFAULT_CADENCE
    scheduled = Config.model_validate({**base, "schedule": {"cron": "0 */3 * * *"}})
    assert table_cadence(scheduled, scheduled.tables[1]).interval == timedelta(hours=3)
    assert table_cadence(scheduled, scheduled.tables[1], timedelta(minutes=2)).origin == "--cadence"
