"""The spool of `bronzeline receive` as a source (`type: tracksolid_push`).

A run of a push table claims the endpoint's closed segments (and the open one when no receiver is running)
by renaming them into `claimed/<run_id>/`, streams their pushes as JSON lines into the run's batch, and
forgets them when the batch is in bronze (`batch_loaded`). Segments an earlier run claimed and never
reported loaded are taken again by the next run: the raw table's id is `<push_id>:<item>`, so a push
streamed into two batches is kept once. How each crash ends is in docs/receive.md.

A push table has no database behind it: the database-only parts of the Source protocol say so (a
SourceError naming the table) or answer with what holds for a spool (the window's upper bound is now).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bronzeline.config.models import PushConfig, TableConfig
from bronzeline.errors import SourceError
from bronzeline.receive import segments
from bronzeline.receive.segments import SegmentReader
from bronzeline.sources import SourceEnv
from bronzeline.sources.base import Bound, CdcFindings, Column, Findings, KeyRanges, ServerInfo, Visibility, Window
from bronzeline.sources.cdc.changes import SlotHealth
from bronzeline.sources.push.records import records_of

_CHUNK = 1 << 16


def spool_root(cfg: PushConfig, base_dir: Path) -> Path:
    """The spool folder: `spool:` relative to the config file's folder."""
    path = Path(cfg.spool).expanduser()
    return path if path.is_absolute() else base_dir / path


class PushExtract:
    """The claimed segments as JSON lines (one `ApiRecord` per pushed item), streamed in chunks."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.rows: int | None = None
        self.pushes = 0
        self.malformed = 0  # lines carrying an error (kept in raw, counted by the load)
        self.torn_bytes = 0  # ignored at the end of segments: never acknowledged

    def __iter__(self) -> Iterator[bytes]:
        buffer = bytearray()
        rows = 0
        for path in self.paths:
            reader = SegmentReader(path)
            for entry in reader:
                self.pushes += 1
                for record in records_of(entry):
                    rows += 1
                    self.malformed += record.error is not None
                    buffer += record.to_line()
                    if len(buffer) >= _CHUNK:
                        yield bytes(buffer)
                        buffer.clear()
            self.torn_bytes += reader.torn_bytes
        if buffer:
            yield bytes(buffer)
        self.rows = rows


class PushSource:
    def __init__(self, name: str, cfg: PushConfig, env: SourceEnv) -> None:
        self.name = name
        self.cfg = cfg
        self.root = spool_root(cfg, env.base_dir)

    def _endpoint(self, table: TableConfig) -> str:
        if table.endpoint is None:
            raise SourceError(f"{table.name}: a push table needs `endpoint:` (the path pushes come to)")
        return table.endpoint

    def _unsupported(self, table: TableConfig | None, what: str) -> SourceError:
        who = f"{table.name}: " if table is not None else f"connection {self.name!r}: "
        return SourceError(f"{who}{what} is not possible for a push source: the spool keeps a push only until "
                           "its batch is in bronze (bronze's _raw table is the record of every push)")

    # ------------------------------------------------------------------ runs
    def describe(self, table: TableConfig) -> list[Column]:
        from bronzeline.sources.api.schema import SCHEMAS

        endpoint = self._endpoint(table)
        try:
            importlib.import_module("bronzeline.sources.push.schemas")  # registers the push endpoints' schemas
        except ModuleNotFoundError:
            pass  # then no push endpoint has a schema: said below
        if endpoint not in SCHEMAS:
            raise SourceError(f"{table.name}: endpoint {endpoint} has no typed schema in this version")
        return SCHEMAS[endpoint].columns()

    def check(self, table: TableConfig, columns: list[Column]) -> list[str]:
        return []

    def key_problems(self, table: TableConfig) -> Findings:
        return Findings()  # the key is the endpoint's; repeated pushes are skipped by the load, not refused

    def watermark_nullable(self, table: TableConfig) -> bool | None:
        return False  # received_at is stamped by the receiver on every push

    def upper_bound(self, table: TableConfig) -> Bound:
        # Everything claimable is complete (acknowledged and fsync'd): nothing is in flight to wait for.
        now = datetime.now(UTC)
        return Bound(now, now, None, None)

    def extract(self, table: TableConfig, columns: list[Column], window: Window) -> PushExtract:
        if window.run_id is None:
            raise SourceError(f"{table.name}: a push table is read by a run (no run id was given)")
        if window.keys is not None:
            raise self._unsupported(table, "a chunked load")
        try:
            claimed = segments.claim(self.root, self._endpoint(table), window.run_id)
        except OSError as exc:
            raise SourceError(f"{table.name}: cannot claim the spooled pushes in {self.root}: "
                              f"{exc.strerror or exc}; check the folder's permissions and free space") from None
        return PushExtract(claimed)

    def batch_loaded(self, table: TableConfig, run_id: int) -> None:
        try:
            segments.forget(self.root, self._endpoint(table), run_id)
        except OSError as exc:  # harmless: the next run streams them again and the load skips them
            raise SourceError(f"{table.name}: the pushes of run {run_id} are in bronze but their spool segments "
                              f"could not be deleted: {exc.strerror or exc}") from None

    # ------------------------------------------------------------------ database-only parts
    def row_estimate(self, table: TableConfig) -> int:
        raise self._unsupported(table, "a chunked first load")

    def key_boundaries(self, table: TableConfig, count: int) -> list[tuple[str, ...]]:
        raise self._unsupported(table, "a chunked first load")

    def key_ranges(self, table: TableConfig, columns: list[Column], window: Window) -> KeyRanges:
        raise self._unsupported(table, "reconcile")

    def server_info(self) -> ServerInfo | None:
        return None  # not a database server

    def visibility(self) -> Visibility:
        # No transactions to see: a claimed segment holds only acknowledged, fsync'd pushes.
        return Visibility(user=f"{self.name} spool", in_recovery=False, superuser=False, read_all_stats=True,
                          other_sessions=0)

    def watermark_indexes(self, table: TableConfig) -> int | None:
        return None

    def clock(self) -> datetime:
        return datetime.now(UTC)

    def local_timestamp(self, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def count_rows(self, table: TableConfig, low: datetime | None = None, high: datetime | None = None) -> int:
        raise self._unsupported(table, "counting rows at the source")

    def null_watermark_count(self, table: TableConfig) -> int:
        return 0

    def geometry_rows(self, table: TableConfig, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        raise self._unsupported(table, "reading rows back from the source")

    def cdc_readiness(self, tables: list[TableConfig], publication: str, slot: str) -> CdcFindings:
        names = {t.name for t in tables}
        return CdcFindings(problems=[f"{t.name}: a push table cannot be `mode: cdc`" for t in tables], rejected=names)

    def slot_health(self, slot: str) -> SlotHealth:
        raise self._unsupported(None, "a replication slot")

    # ------------------------------------------------------------------ lifetime
    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass
