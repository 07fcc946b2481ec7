"""The Tracksolid open platform as a Source: windows in device time read through the fetchers, streamed
as JSON lines of `ApiRecord`s (the load maps them to the typed table and keeps them raw). What only a
database can answer (row counts, key ranges, slots) is declared not available, per method below."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bronzeline.config.endpoints import ENDPOINTS
from bronzeline.config.models import TableConfig, TracksolidConfig
from bronzeline.errors import ConfigError, SourceError
from bronzeline.sources import SourceEnv
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.api.schema import SCHEMAS, EndpointSchema
from bronzeline.sources.base import Bound, CdcFindings, Column, Findings, KeyRanges, ServerInfo, Visibility, Window
from bronzeline.sources.cdc.changes import SlotHealth
from bronzeline.sources.tracksolid.client import TracksolidClient
from bronzeline.sources.tracksolid.fetch import Fetcher

CHUNK_BYTES = 256 * 1024


_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


class JsonLines:
    """An Extract: the records as JSON lines in chunks of about CHUNK_BYTES; `rows` once exhausted."""

    def __init__(self, records: Iterator[ApiRecord]) -> None:
        self._records = records
        self.rows: int | None = None
        self._shared: tuple[object, object, bytes] = (None, None, b"")  # the last call, fetch time and prefix

    def _line(self, record: ApiRecord) -> bytes:
        """`record.to_line()`, byte for byte, but the call and fetch time that every record of one reply
        shares are encoded once (otherwise most of a track poll's cost is re-encoding its call)."""
        if record.error is not None:
            return record.to_line()
        call, at, prefix = self._shared
        if call is not record.call or at is not record.fetched_at:
            stamp = record.fetched_at.astimezone(UTC).isoformat()
            prefix = f'{{"call":{_dumps(record.call)},"fetched_at":{_dumps(stamp)},"record":'.encode()
            self._shared = (record.call, record.fetched_at, prefix)
        return prefix + _dumps(record.record).encode() + b"}\n"

    def __iter__(self) -> Iterator[bytes]:
        buf, count = bytearray(), 0
        for record in self._records:
            buf += self._line(record)
            count += 1
            if len(buf) >= CHUNK_BYTES:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)
        self.rows = count


class TracksolidSource:
    def __init__(self, name: str, cfg: TracksolidConfig, env: SourceEnv) -> None:
        self.name, self.cfg, self.env = name, cfg, env
        self.client = TracksolidClient(name, cfg, env.ledger)
        # each target's device list, read once per run (keyed by run id) and shared by the run's tables
        self._devices: dict[str, Any] = {}
        self._devices_run: int | None = None

    def __repr__(self) -> str:
        return f"TracksolidSource({self.name!r})"

    # ------------------------------------------------------------------ what the table is
    def _schema(self, table: TableConfig) -> EndpointSchema:
        try:
            import bronzeline.sources.tracksolid.schemas  # noqa: F401 - registers the endpoint schemas
        except ImportError:
            pass
        schema = SCHEMAS.get(table.endpoint or "")
        if schema is None:
            known = sorted(e.name for e in ENDPOINTS.values()
                           if e.connection_type == "tracksolid" and e.name in SCHEMAS)
            raise ConfigError(f"{table.name}: endpoint {table.endpoint!r} has no typed schema in this build; "
                              f"use one of {', '.join(known) or '(none)'}")
        return schema

    def describe(self, table: TableConfig) -> list[Column]:
        return self._schema(table).columns()

    def check(self, table: TableConfig, columns: list[Column]) -> list[str]:
        shape = ENDPOINTS.get(table.endpoint or "")
        if shape is None:
            return [f"{table.name}: a tracksolid table needs `endpoint:` (one of "
                    f"{', '.join(e.name for e in ENDPOINTS.values() if e.connection_type == 'tracksolid')})"]
        if shape.connection_type != "tracksolid":
            return [f"{table.name}: endpoint {shape.name} is served by a {shape.connection_type} connection, "
                    f"not by {self.name!r} (tracksolid)"]
        try:
            self._schema(table)
        except ConfigError as exc:
            return [str(exc)]
        return []

    def key_problems(self, table: TableConfig) -> Findings:
        return Findings()  # the key is the endpoint's own; duplicates are skipped at load

    def watermark_nullable(self, table: TableConfig) -> bool | None:
        return False  # a record without its time cannot map: it lands in raw, never in the typed table

    # ------------------------------------------------------------------ windows
    def clock(self) -> datetime:
        """The platform's clock (its last Date header, moved on) when known, else the machine's."""
        return self.client.server_clock() or datetime.now(UTC)

    def local_timestamp(self, value: datetime) -> datetime:
        return value.astimezone(UTC).replace(tzinfo=None)  # the platform keeps UTC

    def upper_bound(self, table: TableConfig) -> Bound:
        if self.client.server_clock() is None:
            self._ask_platform(table.name)  # the window's bound comes from the platform's clock, not the machine's
        clock = self.clock()
        return Bound((clock - table.settle_interval).replace(microsecond=0), clock, None, None)

    def extract(self, table: TableConfig, columns: list[Column], window: Window) -> JsonLines:
        self.client.reset_cancel()  # a cancel was for the previous table's timeout
        if window.run_id != self._devices_run:
            self._devices, self._devices_run = {}, window.run_id
        end = window.end or datetime.now(UTC)  # snapshots have no window: they ignore it
        start = window.start or end - table.since_interval
        fetcher = Fetcher(self.client, self.cfg, table.name, window.run_id, self._devices)
        return JsonLines(fetcher.records(table.endpoint or "", start, end))

    # ------------------------------------------------------------------ database-only questions
    def _na(self, table: TableConfig | None, what: str) -> SourceError:
        who = f"{table.name}: " if table is not None else f"source {self.name!r}: "
        return SourceError(f"{who}{what} is not available for API tables")

    def row_estimate(self, table: TableConfig) -> int:
        return 0  # unknown: a chunked first load is one chunk

    def key_boundaries(self, table: TableConfig, count: int) -> list[tuple[str, ...]]:
        return []  # one range

    def key_ranges(self, table: TableConfig, columns: list[Column], window: Window) -> KeyRanges:
        raise self._na(table, "reading by key range (reconcile)")

    def server_info(self) -> ServerInfo | None:
        """The platform answers a signed call as the login (token, app key and secret, password): `verify`'s
        connection gate."""
        self._ask_platform(None)
        host = urlsplit(self.cfg.url).hostname or self.cfg.url
        return ServerInfo(self.cfg.user_id, f"at {host}", False, product="Tracksolid open platform")

    def _ask_platform(self, table_name: str | None) -> None:
        """One signed call as the login, which also tells the platform's clock (its Date header): the first
        target's device list, the cheapest such call and one every run reads anyway."""
        account = self.cfg.accounts[0]
        self.client.call("jimi.user.device.list", {"target": account}, target=account, table_name=table_name)

    def visibility(self) -> Visibility:
        # No transactions to miss: late records are the lookback's business. Reported as able to see
        # everything so the visibility gate never fails an API table.
        return Visibility(self.cfg.user_id, False, False, True, 0)

    def watermark_indexes(self, table: TableConfig) -> int | None:
        return None  # cannot be told

    def count_rows(self, table: TableConfig, low: datetime | None = None, high: datetime | None = None) -> int:
        raise self._na(table, "counting rows at the source")

    def null_watermark_count(self, table: TableConfig) -> int:
        return 0  # the platform serves no record without its time (one that lacks it lands in raw)

    def geometry_rows(self, table: TableConfig, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        raise self._na(table, "reading geometry by key")

    def cdc_readiness(self, tables: list[TableConfig], publication: str, slot: str) -> CdcFindings:
        return CdcFindings(problems=[f"source {self.name!r}: change data capture is not available for API "
                                     "tables; use mode incremental or snapshot"], rejected={t.name for t in tables})

    def slot_health(self, slot: str) -> SlotHealth:
        raise self._na(None, "a replication slot")

    def batch_loaded(self, table: TableConfig, run_id: int) -> None:
        pass  # the platform keeps its records: nothing to forget

    # ------------------------------------------------------------------ lifetime
    def cancel(self) -> None:
        self.client.cancel()

    def close(self) -> None:
        self.client.close()
