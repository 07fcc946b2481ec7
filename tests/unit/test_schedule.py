"""Cron in the config's time zone, per-table cadence, and which tables are due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bronzeline.config.models import Config, ModelsConfig
from bronzeline.errors import ConfigError
from bronzeline.models.outcome import BuildReport, CheckResult, ModelOutcome
from bronzeline.models.spec import CheckSpec
from bronzeline.schedule import Scheduler, due, next_fire, prev_fire, table_crons

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


# ---------------------------------------------------------------- models built after each pass of loads
def models_config(**models: Any) -> Config:
    return config().model_copy(update={"models": ModelsConfig(**models)})


def report() -> BuildReport:
    speed = CheckSpec("accepted_range", "silver.fixes", "speed")
    plate = CheckSpec("not_null", "silver.devices", "plate", severity="warn")
    imei = CheckSpec("not_null", "bronze.positions", "imei")
    return BuildReport(
        sources=[CheckResult(imei, "pass", 0, 800)],
        models=[ModelOutcome("silver.devices", "view", "built", rows=80, seconds=0.25,
                             checks=[CheckResult(plate, "warn", 3, 80)]),
                ModelOutcome("silver.fixes", "table", "failed", rows=None, seconds=1.5,
                             message="accepted_range(speed) failed: 5 of 800 rows",
                             checks=[CheckResult(speed, "fail", 5, 800)]),
                ModelOutcome("gold.speed", "table", "blocked", message="blocked by silver.fixes")])


def test_a_build_after_the_loads_logs_each_model_and_each_failed_check() -> None:
    lines: list[str] = []
    built: list[Config] = []

    def build(cfg: Config) -> BuildReport:
        built.append(cfg)
        return report()

    cfg = models_config()
    assert Scheduler(cfg, lines.append, build=build).build_models() is not None
    assert built == [cfg]
    assert lines == ["models: build started",
                     "silver.devices: built 80 rows in 0.25s",
                     "silver.devices: check not_null(plate) warned: 3 of 80 rows",
                     "silver.fixes: failed in 1.50s: accepted_range(speed) failed: 5 of 800 rows",
                     "silver.fixes: check accepted_range(speed) failed: 5 of 800 rows",
                     "gold.speed: blocked: blocked by silver.fixes",
                     "models: 1 of 3 built; see the failures above"]


@pytest.mark.parametrize("error", [ConfigError("models/silver/x.sql: cannot parse"), RuntimeError("boom")])
def test_a_build_error_is_logged_and_never_stops_the_scheduler(error: Exception) -> None:
    lines: list[str] = []

    def build(cfg: Config) -> BuildReport:
        raise error

    assert Scheduler(models_config(), lines.append, build=build).build_models() is None
    assert lines[0] == "models: build started"
    assert lines[1].startswith("models: error: models/silver/x.sql" if isinstance(error, ConfigError)
                               else "models: internal error: RuntimeError: boom")


@pytest.mark.parametrize("cfg", [config(), models_config(schedule_build=False)])
def test_no_build_without_models_or_with_schedule_build_off(cfg: Config) -> None:
    lines: list[str] = []

    def build(cfg: Config) -> BuildReport:
        raise AssertionError("not to be called")

    assert Scheduler(cfg, lines.append, build=build).build_models() is None
    assert lines == []


def test_no_build_once_stopping() -> None:
    scheduler = Scheduler(models_config(), [].append, build=lambda cfg: report())
    scheduler.stop()
    assert scheduler.build_models() is None
