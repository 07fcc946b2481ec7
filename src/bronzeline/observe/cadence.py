"""A table's cadence — the longest gap between two runs its cron allows — for freshness checks.

Only what freshness needs: the five standard cron fields (numbers, names, `*`, ranges, steps,
lists; day-of-month and day-of-week OR-ed when both are restricted, as cron does). Gaps are
measured in wall-clock time in the config's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise

from bronzeline.config.models import Config, TableConfig
from bronzeline.errors import ConfigError

DEFAULT_CADENCE = timedelta(days=1)  # no cron anywhere: assume one run a day
_HORIZON_DAYS = 800  # long enough to see a yearly cron fire twice
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                        "nov", "dec"))},
    4: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


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
        return Cadence(longest_gap(table.cron), f"tables[{table.name}].cron")
    if config.schedule.cron:
        return Cadence(longest_gap(config.schedule.cron), "schedule.cron")
    return Cadence(DEFAULT_CADENCE, "no cron configured: daily assumed")


def _field(text: str, index: int) -> tuple[set[int], bool]:
    """The values a cron field allows, and whether it is restricted (not `*`)."""
    low, high = _RANGES[index]
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body in {"*", "?"}:
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _value(a, index), _value(b, index)
        else:
            start = _value(body, index)
            end = high if step_text else start
        if step < 1 or not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(part)
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return values, not text.startswith(("*", "?"))


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    return names[text] if text in names else int(text)


def fire_days(cron: str, start: date, days: int) -> list[date]:
    """The days in [start, start + days) on which `cron` fires at least once."""
    fields = cron.split()
    dom, dom_restricted = _field(fields[2], 2)
    months, _ = _field(fields[3], 3)
    dow, dow_restricted = _field(fields[4], 4)
    out = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        if day.month not in months:
            continue
        in_dom, in_dow = day.day in dom, (day.isoweekday() % 7) in dow
        if (in_dom or in_dow) if (dom_restricted and dow_restricted) else (in_dom and in_dow):
            out.append(day)
    return out


def longest_gap(cron: str, start: date | None = None) -> timedelta:
    """The longest wall-clock gap between two consecutive times `cron` fires."""
    try:
        fields = cron.split()
        if len(fields) != 5:
            raise ValueError(cron)
        minutes = sorted(_field(fields[0], 0)[0])
        hours = sorted(_field(fields[1], 1)[0])
        days = fire_days(cron, start or date(2024, 1, 1), _HORIZON_DAYS)
    except (ValueError, KeyError):
        raise ConfigError(f"cron {cron!r} cannot be read; write five fields such as '0 5,8,11 * * *'") from None
    if not days:
        raise ConfigError(f"cron {cron!r} never fires; check its day and month fields")
    times = [h * 60 + m for h in hours for m in minutes]  # minutes after midnight, sorted
    gap = max((b - a for a, b in pairwise(times)), default=0)
    for prev, nxt in pairwise(days):
        gap = max(gap, (nxt - prev).days * 1440 - times[-1] + times[0])
    if len(days) == 1:
        gap = max(gap, 366 * 1440)
    return timedelta(minutes=gap)
