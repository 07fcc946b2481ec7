"""The error hierarchy. The CLI catches BronzelineError only: print `error: …`, exit 1.

Messages are lower-case, say what went wrong and what to do, and never carry a secret.
"""

from __future__ import annotations


class BronzelineError(Exception):
    """Root of every error a user must act on."""


class ConfigError(BronzelineError):
    """The config file is missing, malformed, or names something that does not exist."""


class SourceError(BronzelineError):
    """The source database refused, was unreachable, or lacks what a table needs."""


class WarehouseError(BronzelineError):
    """The warehouse refused, was unreachable, or its objects are not as expected."""


class StoreError(BronzelineError):
    """The object store could not be read or written."""


class BatchError(BronzelineError):
    """A batch file does not match its manifest, or its content cannot be loaded."""


class MigrationError(WarehouseError):
    """`migrate` found problems (all of them are listed in the message)."""


class LockBusy(BronzelineError):
    """Another run holds the table's lock; the table is skipped, not failed."""


def detached(exc: BaseException) -> BaseException:
    """`exc` with the tracebacks along its chain dropped, to be kept after the `except` block (retry.py
    classifies it) without keeping the failed run's frames alive: their generators, open uploads and
    COPY streams are then closed at once, as they would be without it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        cur.__traceback__ = None
        todo += [cur.__cause__, cur.__context__]
    return exc
