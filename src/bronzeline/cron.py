"""The one cron reader (croniter): validation for the config, the next and previous fire times for
the scheduler; observe/cadence.py measures a cron's longest gap with the same library. croniter is
imported on first use, so commands without a cron do not pay for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def validate_cron(expr: str) -> str:
    """`expr` when croniter reads it as five fields, or six with seconds last; ValueError otherwise."""
    from croniter import croniter

    if len(expr.split()) not in (5, 6) or not croniter.is_valid(expr):
        raise ValueError(f"{expr!r} is not a cron expression; write five fields (minute hour day month weekday) "
                         "such as '0 5,8,11 * * *', or six with seconds last")
    return expr


def next_fire(cron: str, after: datetime, tz: ZoneInfo) -> datetime:
    """The first time strictly after `after` that `cron` (read in `tz`) fires."""
    from croniter import croniter

    fire: datetime = croniter(cron, after.astimezone(tz)).get_next(datetime)
    return fire


def prev_fire(cron: str, at: datetime, tz: ZoneInfo) -> datetime:
    """The latest time at or before `at` that `cron` fires."""
    from croniter import croniter

    fire: datetime = croniter(cron, (at + timedelta(microseconds=1)).astimezone(tz)).get_prev(datetime)
    return fire
