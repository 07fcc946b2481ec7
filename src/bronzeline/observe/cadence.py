"""A table's cadence — the longest gap between two runs its cron allows — for freshness checks.

croniter reads every cron here, as it does for `schedule` and the config's validation: five fields, or
six with seconds last (croniter's convention), with names, ranges, steps, lists, `L` and `#`.
A cron fires at the same times on every day it fires (its second, minute and hour fields do not
depend on the date), so the longest gap is the larger of the longest gap inside a firing day and the
longest gap from one firing day's last run to the next firing day's first run. Gaps between days are
measured in real elapsed time in the config's time zone (a DST night counts its extra hour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING

from croniter import CroniterBadDateError, croniter

from bronzeline.cron import validate_cron
from bronzeline.errors import ConfigError

if TYPE_CHECKING:
    from bronzeline.config.models import Config, TableConfig

DEFAULT_CADENCE = timedelta(days=1)  # no cron anywhere: assume one run a day
DEFAULT_ORIGIN = "no cron configured: daily assumed"
_HORIZON_DAYS = 800  # long enough to see a yearly cron fire twice
_MAX_FIRING_DAYS = 400  # a daily cron's pattern repeats within a year; stop walking there
_START = date(2024, 1, 1)  # a fixed start: the same cron always gets the same cadence


@dataclass(frozen=True)
class Cadence:
    interval: timedelta
    origin: str  # where it came from: tables[<name>].cron, schedule.cron, --cadence, or the default

    @property
    def seconds(self) -> float:
        return self.interval.total_seconds()


def table_cadence(config: Config, table: TableConfig, override: timedelta | None = None) -> Cadence:
    """`override`, else the table's cron, else schedule.cron, else one day."""
    if override is not None:
        return Cadence(override, "--cadence")
    if table.cron:
        return Cadence(longest_gap(table.cron, tz=config.tz), f"tables[{table.name}].cron")
    if config.schedule.cron:
        return Cadence(longest_gap(config.schedule.cron, tz=config.tz), "schedule.cron")
    return Cadence(DEFAULT_CADENCE, DEFAULT_ORIGIN)


def _times_of_day(expanded: list[list[int | str]]) -> list[int]:
    """Seconds after midnight at which the cron fires on a day it fires, sorted."""
    def values(field: list[int | str], top: int) -> list[int]:
        return list(range(top)) if "*" in field else sorted(int(v) for v in field)

    seconds = values(expanded[5], 60) if len(expanded) > 5 else [0]
    return sorted(h * 3600 + m * 60 + s
                  for h in values(expanded[1], 24) for m in values(expanded[0], 60) for s in seconds)


def _firing_days(fields: list[str], expanded: list[list[int | str]], start: date) -> list[date]:
    """The days from `start` on which the cron fires, up to one past the horizon (or _MAX_FIRING_DAYS)."""
    end = start + timedelta(days=_HORIZON_DAYS)
    if all(expanded[i] == ["*"] for i in (2, 3, 4)):  # every day: no need to ask croniter day by day
        return [start + timedelta(days=n) for n in range(_MAX_FIRING_DAYS)]
    # the same day fields at midnight, walked with croniter
    days = croniter(" ".join(["0", "0", *fields[2:5]]), datetime.combine(start, time()) - timedelta(seconds=1))
    firing: list[date] = [days.get_next(datetime).date()]
    while firing[-1] <= end and len(firing) < _MAX_FIRING_DAYS:
        firing.append(days.get_next(datetime).date())
    return firing


def longest_gap(cron: str, start: date | None = None, *, tz: tzinfo = UTC) -> timedelta:
    """The longest gap between two consecutive times `cron` (read in `tz`) fires."""
    return _longest_gap(cron, start or _START, tz)


@lru_cache(maxsize=256)
def _longest_gap(cron: str, start: date, tz: tzinfo) -> timedelta:
    try:
        validate_cron(cron)
        fields = cron.split()
        expanded = croniter(cron).expanded
        times = _times_of_day(expanded)
        firing = _firing_days(fields, expanded, start)
    except CroniterBadDateError:  # it never fires (e.g. 31 February)
        raise ConfigError(f"cron {cron!r} never fires; check its day and month fields") from None
    except ValueError as exc:
        raise ConfigError(f"cron {cron!r} cannot be read: {exc}") from None
    gap = max((b - a for a, b in pairwise(times)), default=0)
    longest = timedelta(seconds=gap)
    for prev, nxt in pairwise(firing):
        last = datetime.combine(prev, time(), tz) + timedelta(seconds=times[-1])
        following = datetime.combine(nxt, time(), tz) + timedelta(seconds=times[0])
        longest = max(longest, following.astimezone(UTC) - last.astimezone(UTC))
    return longest
