"""One way each to show an error's first line, a timestamp and a duration."""

from __future__ import annotations

from datetime import datetime

_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0))


def first_line(error: BaseException | str | None) -> str:
    """The first non-blank line of an exception's message (its type name when it has none) or of a text."""
    text = str(error).strip() if error is not None else ""
    if text:
        return text.splitlines()[0].strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


def iso(value: datetime | None, timespec: str = "auto") -> str | None:
    """ISO-8601 (with the UTC offset for aware values); None stays None."""
    return value.isoformat(timespec=timespec) if isinstance(value, datetime) else None


def from_iso(text: str | None) -> datetime | None:
    """The inverse of `iso`: a datetime from ISO-8601 text; None (or empty) stays None."""
    return datetime.fromisoformat(text) if text else None


def human_duration(seconds: float | None) -> str:
    """`90` -> "1.5 min", `7200` -> "2.0 h"; None -> "—"."""
    if seconds is None:
        return "—"
    for unit, size in _UNITS:
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
