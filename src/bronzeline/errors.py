"""The error hierarchy. The CLI catches BronzelineError only: print `error: …`, exit 1.

Messages are lower-case, say what went wrong and what to do, and never carry a secret.
"""

from __future__ import annotations


class BronzelineError(Exception):
    """Root of every error a user must act on."""


class Transient(BronzelineError):
    """An outage rather than a mistake: another attempt may succeed (the source or warehouse did not
    answer, the object store was unavailable). Retries decide on this type, never on message text."""


class Terminal(BronzelineError):
    """A mistake rather than an outage: another attempt would fail the same way (a wrong config, a
    refused login, a batch that does not match its manifest). Never retried."""


class ConfigError(Terminal):
    """The config file is missing, malformed, or names something that does not exist."""


class SourceError(BronzelineError):
    """The source database refused, was unreachable, or lacks what a table needs."""


class SourceUnreachable(SourceError, Transient):
    """The source server did not answer (refused, timed out, starting up or shutting down)."""


class SourceRefused(SourceError, Terminal):
    """The source server answered and refused the login (user, password, database, pg_hba.conf)."""


class SlotLost(SourceError, Terminal):
    """The CDC slot is gone or invalidated (wal_status 'lost'): the changes since the last applied position
    can no longer be read. Only `bronzeline resync TABLE…` (a new slot and snapshot) recovers."""


class CdcUnavailable(SourceError, Terminal):
    """The source cannot serve change data capture as configured: wal_level is not logical, the login lacks
    REPLICATION, the publication is missing, or the slot's name is taken. The message gives the fix."""


class ChangeDecodeError(SourceError, Terminal):
    """A message read from the slot is not valid pgoutput (protocol version 1)."""


class WarehouseError(BronzelineError):
    """The warehouse refused, was unreachable, or its objects are not as expected."""


class WarehouseUnreachable(WarehouseError, Transient):
    """The warehouse server did not answer, or its connection was lost."""


class WarehouseRefused(WarehouseError, Terminal):
    """The warehouse server answered and refused the login."""


class StoreError(BronzelineError):
    """The object store could not be read or written."""


class BatchError(Terminal):
    """A batch file does not match its manifest, or its content cannot be loaded."""


class MigrationError(WarehouseError, Terminal):
    """`migrate` found problems (all of them are listed in the message)."""


class LockBusy(BronzelineError):
    """Another run holds the table's lock; the table is skipped, not failed."""


class SlotBusy(LockBusy):
    """Another bronzeline process reads the CDC slot (one consumer per slot)."""


def detached(exc: BaseException) -> BaseException:
    """`exc` with the tracebacks along its chain dropped, to be kept after the `except` block (pipeline/attempts.py
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
