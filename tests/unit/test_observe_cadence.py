"""Cadence from cron expressions: the longest gap between two runs, as verify's freshness limit uses it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.observe.cadence import DEFAULT_CADENCE, longest_gap, table_cadence


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
])
def test_longest_gap(cron: str, gap: timedelta) -> None:
    assert longest_gap(cron) == gap


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
