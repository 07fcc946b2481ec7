"""Cron in the config's time zone, per-table cadence, and which tables are due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.schedule import due, next_fire, prev_fire, table_crons

NAIROBI = ZoneInfo("Africa/Nairobi")
CRON = "0 5,8,11,14,17,20,23 * * *"


def config(schedule: str | None = CRON, **crons: str) -> Config:
    tables: list[dict[str, Any]] = [
        {"name": name, "from": f"s.{name}", "watermark": "t", "key": ["id"], **({"cron": crons[name]} if name in crons
                                                                                  else {})}
        for name in ("positions", "devices")]
    return Config.model_validate({
        "project": "p", "timezone": "Africa/Nairobi", "blob": {"url": "file://./b"},
        "connections": {"source": {"dsn": "host=127.0.0.1"}, "warehouse": {"dsn": "host=127.0.0.1"}},
        "tables": tables, "schedule": {"cron": schedule}})


def test_next_fire_is_in_the_config_time_zone() -> None:
    # 01:59 UTC is 04:59 in Nairobi: the next slot is 05:00 EAT, i.e. 02:00 UTC
    fire = next_fire(CRON, datetime(2026, 1, 1, 1, 59, tzinfo=UTC), NAIROBI)
    assert fire == datetime(2026, 1, 1, 2, 0, tzinfo=UTC) and fire.utcoffset().total_seconds() == 3 * 3600
    assert next_fire(CRON, fire, NAIROBI) == datetime(2026, 1, 1, 5, 0, tzinfo=UTC)  # 08:00 EAT
    # after 23:00 EAT the next slot is 05:00 the next day
    assert next_fire(CRON, datetime(2026, 1, 1, 20, 0, tzinfo=UTC), NAIROBI) == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)


def test_prev_fire_includes_the_exact_slot() -> None:
    slot = datetime(2026, 1, 1, 5, 0, tzinfo=NAIROBI)
    assert prev_fire(CRON, slot, NAIROBI) == slot
    assert prev_fire(CRON, datetime(2026, 1, 1, 7, 59, tzinfo=NAIROBI), NAIROBI) == slot


def test_six_fields_add_seconds() -> None:
    start = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert next_fire("* * * * * */15", start, NAIROBI) == datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)


def test_per_table_cron_overrides_the_schedule() -> None:
    crons = table_crons(config(devices="0 6 * * *"))
    assert crons == {"positions": CRON, "devices": "0 6 * * *"}
    with pytest.raises(ConfigError, match="positions"):
        table_crons(config(schedule=None, devices="0 6 * * *"))
    assert table_crons(config(schedule=None), required=False) == {"positions": None, "devices": None}


def test_due_tables() -> None:
    cfg = config(devices="0 6 * * *")
    now = datetime(2026, 1, 1, 8, 30, tzinfo=NAIROBI)
    # never ran: due
    assert [t.name for t in due(cfg, now, {})] == ["positions", "devices"]
    # positions ran after its 08:00 slot, devices ran after its 06:00 slot: nothing due
    last = {"positions": datetime(2026, 1, 1, 8, 0, 2, tzinfo=NAIROBI),
            "devices": datetime(2026, 1, 1, 6, 0, 1, tzinfo=NAIROBI)}
    assert due(cfg, now, last) == []
    # positions last ran at 05:00: the 08:00 slot was missed, so it is due (once)
    last["positions"] = datetime(2026, 1, 1, 5, 0, 1, tzinfo=NAIROBI)
    assert [t.name for t in due(cfg, now, last)] == ["positions"]
    # no cron at all (cron-driven setups): every table is due every time
    assert len(due(config(schedule=None), now, last)) == 2


@pytest.mark.parametrize("bad", ["61 * * * *", "* * *", "every hour", "0 5 * * * * *"])
def test_bad_cron_is_a_config_error(bad: str) -> None:
    with pytest.raises(ValueError, match="not a cron expression"):
        config(schedule=bad)
