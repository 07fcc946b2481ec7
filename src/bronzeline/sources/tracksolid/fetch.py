"""The endpoints' fetchers: the calls each endpoint makes for a window (start, end] and the vendor records
they yield, one `ApiRecord` per record, streamed (nothing but one reply, or one alarm query, is held).

Windows go to the platform as inclusive whole seconds: (start, end] is sent as [start+1s, end] (start
rounded down first), so consecutive windows never read a second twice; spans are at most 7 days (the
platform's limit for track.list, used for every windowed method)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from bronzeline.config.models import TracksolidConfig
from bronzeline.errors import ConfigError
from bronzeline.sources.api.records import ApiRecord
from bronzeline.sources.tracksolid.client import ApiCallError, Reply, TracksolidClient
from bronzeline.sources.tracksolid.signing import platform_time

MAX_SPAN = timedelta(days=7)
PAGE = 100  # page size for alarms (the platform's maximum), trips and parking
ALARM_QUERY_ROWS = 1000  # one alarm query serves at most this many rows: a fuller span is split in two
ILLEGAL_DEVICE = 1002  # an expired or removed device in a per-device call: a raw error record, not a failed run
# Parking vs idling: the doc says acc_type on/off, one production client sends 0 [conflict]; "off" = parking.
PARKING_ACC_TYPE = "off"

Seconds = tuple[int, int]  # an inclusive span in whole epoch seconds


def spans(start: datetime, end: datetime, most: timedelta = MAX_SPAN) -> Iterator[Seconds]:
    """(start, end] as inclusive whole-second spans of at most `most` each."""
    low, high, step = math.floor(start.timestamp()) + 1, math.floor(end.timestamp()), int(most.total_seconds())
    while low <= high:
        yield low, min(high, low + step - 1)
        low += step


def _t(second: int) -> str:
    return platform_time(datetime.fromtimestamp(second, UTC))


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Fetcher:
    """One table's reads for one run; `devices` caches each target's device list for the run."""

    def __init__(self, client: TracksolidClient, cfg: TracksolidConfig, table_name: str | None,
                 run_id: int | None, devices: dict[str, tuple[list[Any], ApiRecord]]) -> None:
        self.client, self.cfg, self.table_name, self.run_id = client, cfg, table_name, run_id
        self._devices = devices

    def records(self, endpoint: str, start: datetime | None = None, end: datetime | None = None,
                ) -> Iterator[ApiRecord]:
        """The endpoint's records; windowed endpoints read (start, end], snapshots ignore the window."""
        snapshots = {"devices": self.devices, "device_detail": self.device_detail,
                     "live_positions": self.live_positions}
        windowed = {"track": self.track, "alarms": self.alarms, "trips": self.trips, "parking": self.parking}
        if endpoint in snapshots:
            yield from snapshots[endpoint]()
        elif endpoint in windowed:
            if start is None or end is None:
                raise ValueError(f"endpoint {endpoint} reads a window: give start and end")
            yield from windowed[endpoint](start, end)
        else:
            raise ConfigError(f"{self.table_name}: endpoint {endpoint!r} is not read from a tracksolid connection; "
                              f"use one of {', '.join([*snapshots, *windowed])}")

    # ------------------------------------------------------------------ calls
    def _call(self, method: str, params: dict[str, Any], target: str, imeis: int = 0) -> tuple[Reply, dict[str, Any]]:
        shown = {k: str(v) for k, v in params.items() if v is not None and str(v) != ""}
        reply = self.client.call(method, shown, target=target, imeis=imeis, table_name=self.table_name,
                                 run_id=self.run_id)
        # the call as raw rows keep it: only the private params (never token, sign or app key)
        return reply, {"method": method, "target": target, "params": shown}

    def _rows(self, part: Any, call: dict[str, Any], at: datetime) -> Iterator[ApiRecord]:
        """A reply's list of records; anything else but null is kept as one bad record for raw."""
        if isinstance(part, list):
            for row in part:
                yield ApiRecord(row, call, at)
        elif part is not None:
            yield ApiRecord(part, call, at, error="unexpected reply: the records are not a list")

    def device_list(self, target: str) -> tuple[list[Any], ApiRecord]:
        """The target's device list (one call per target and run) and the call it came from."""
        if target not in self._devices:
            reply, call = self._call("jimi.user.device.list", {"target": target}, target)
            rows = reply.result if isinstance(reply.result, list) else []
            self._devices[target] = (rows, ApiRecord(None, call, datetime.now(UTC)))
        return self._devices[target]

    def imeis(self, target: str) -> list[str]:
        rows, _ = self.device_list(target)
        return [str(r["imei"]) for r in rows if isinstance(r, dict) and r.get("imei")]

    def _detail(self, target: str, imei: str) -> tuple[Any, dict[str, Any], str | None]:
        """A device's detail record, its call, and the platform's refusal when it has none."""
        try:
            reply, call = self._call("jimi.track.device.detail", {"imei": imei}, target, 1)
        except ApiCallError as exc:
            # An expired or removed device (1002), or a platform that will not give details: the list's record
            # still stands; the refusal is kept with it. (Tokens and rate limits never get here: the client
            # retries those, and fails the run when it cannot.)
            return None, {"method": exc.method, "target": target, "params": {"imei": imei}}, \
                f"code {exc.code}: {exc.platform_message}"
        return reply.result, call, None

    # ------------------------------------------------------------------ snapshots
    def devices(self) -> Iterator[ApiRecord]:
        """One record per listed device: the detail's fields with the list's on top (the list is the
        account's own view and what the snapshot is of; the detail adds SIM, account, mileage…)."""
        for target in self.cfg.accounts:
            rows, listed = self.device_list(target)
            for row in rows:
                if not isinstance(row, dict) or not row.get("imei"):
                    yield ApiRecord(row, listed.call, listed.fetched_at, error="a device row without an imei")
                    continue
                detail, detail_call, refused = self._detail(target, str(row["imei"]))
                merged = {**detail, **row} if isinstance(detail, dict) else dict(row)
                call = {**listed.call, "detail": detail_call["params"]}
                if refused:
                    call["detail_error"] = refused  # kept without the detail's fields
                yield ApiRecord(merged, call, datetime.now(UTC))

    def device_detail(self) -> Iterator[ApiRecord]:
        for target in self.cfg.accounts:
            for imei in self.imeis(target):
                detail, call, refused = self._detail(target, imei)
                yield ApiRecord(detail, call, datetime.now(UTC), error=refused)

    def live_positions(self) -> Iterator[ApiRecord]:
        # location.get by IMEI batches rather than location.list per account: it takes max_imeis per call
        for target in self.cfg.accounts:
            for batch in _batches(self.imeis(target), self.cfg.max_imeis):
                reply, call = self._call("jimi.device.location.get",
                                         {"imeis": ",".join(batch), "map_type": self.cfg.map_type}, target, len(batch))
                yield from self._rows(reply.result, call, datetime.now(UTC))

    # ------------------------------------------------------------------ windows
    def track(self, start: datetime, end: datetime) -> Iterator[ApiRecord]:
        """One call per device and span. The next call is made (on a worker thread) while this one's
        points are consumed, so waiting on the platform overlaps encoding and loading."""
        jobs = ((target, imei, low, high) for target in self.cfg.accounts for imei in self.imeis(target)
                for low, high in spans(start, end))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracksolid-ahead") as ahead:
            pending: tuple[dict[str, Any], str, Future[tuple[Reply, dict[str, Any]]]] | None = None
            for target, imei, low, high in jobs:
                params = {"imei": imei, "begin_time": _t(low), "end_time": _t(high), "map_type": self.cfg.map_type}
                future = ahead.submit(self._call, "jimi.device.track.list", params, target, 1)
                if pending is not None:
                    yield from self._points(*pending)
                pending = (params, target, future)
            if pending is not None:
                yield from self._points(*pending)

    def _points(self, params: dict[str, Any], target: str,
                future: Future[tuple[Reply, dict[str, Any]]]) -> Iterator[ApiRecord]:
        try:
            reply, call = future.result()
        except ApiCallError as exc:
            if exc.code != ILLEGAL_DEVICE:
                raise
            yield ApiRecord(None, {"method": exc.method, "target": target, "params": params}, datetime.now(UTC),
                            error=f"code {exc.code}: {exc.platform_message}")
            return
        at = datetime.now(UTC)
        # track points do not name their device: the IMEI asked for is added (nothing else changes)
        points = reply.result
        if isinstance(points, list):
            points = [{"imei": params["imei"], **p} if isinstance(p, dict) and "imei" not in p else p
                      for p in points]
        yield from self._rows(points, call, at)

    def alarms(self, start: datetime, end: datetime) -> Iterator[ApiRecord]:
        for target in self.cfg.accounts:
            for batch in _batches(self.imeis(target), self.cfg.max_imeis):
                for span in spans(start, end):
                    yield from self._alarm_span(target, batch, span)

    def _alarm_span(self, target: str, batch: list[str], span: Seconds) -> Iterator[ApiRecord]:
        """Every page of one alarm query; a query that reaches the platform's row cap is read again as
        two halves (its pages are held until then: at most ALARM_QUERY_ROWS records)."""
        low, high = span
        held: list[ApiRecord] = []
        page = 1
        while True:
            reply, call = self._call("jimi.device.alarm.list", {
                "imeis": ",".join(batch), "begin_time": _t(low), "end_time": _t(high), "page_no": page,
                "page_size": PAGE}, target, len(batch))
            rows = list(self._rows(reply.result, call, datetime.now(UTC)))
            if held and _same_page(rows, held[-len(rows):]):
                break  # the platform ignores paging here: the page came back again
            held += rows
            if len(rows) < PAGE:
                break
            if len(held) >= ALARM_QUERY_ROWS and high > low:
                middle = low + (high - low) // 2
                yield from self._alarm_span(target, batch, (low, middle))
                yield from self._alarm_span(target, batch, (middle + 1, high))
                return
            page += 1
        yield from held

    def trips(self, start: datetime, end: datetime) -> Iterator[ApiRecord]:
        for target in self.cfg.accounts:
            for batch in _batches(self.imeis(target), self.cfg.max_imeis):
                for low, high in spans(start, end):
                    first, last = 1, None  # start_row is 1-based [inf]
                    while True:
                        reply, call = self._call("jimi.device.track.mileage", {
                            "imeis": ",".join(batch), "begin_time": _t(low), "end_time": _t(high),
                            "start_row": first, "page_size": PAGE}, target, len(batch))
                        # rows (one per trip) are in `result`; `data` has per-IMEI totals, derivable: not kept
                        if last is not None and reply.result == last:
                            break  # the platform ignores paging here: the page came back again
                        yield from self._rows(reply.result, call, datetime.now(UTC))
                        if not isinstance(reply.result, list) or len(reply.result) < PAGE:
                            break
                        first, last = first + PAGE, reply.result

    def parking(self, start: datetime, end: datetime) -> Iterator[ApiRecord]:
        for target in self.cfg.accounts:
            for batch in _batches(self.imeis(target), self.cfg.max_imeis):
                for low, high in spans(start, end):
                    first, last = 1, None  # 1-based [inf]: one client probes 1 then 0
                    while True:
                        reply, call = self._call("jimi.open.platform.report.parking", {
                            "account": target, "imeis": ",".join(batch), "start_time": _t(low),
                            "end_time": _t(high), "start_row": first, "page_size": PAGE,
                            "acc_type": PARKING_ACC_TYPE}, target, len(batch))
                        # result is null: the rows are in data.rows (next to totalTime, dataTotalRows)
                        rows = reply.data.get("rows") if isinstance(reply.data, dict) else reply.data
                        if last is not None and rows == last:
                            break  # the platform ignores paging here: the page came back again
                        yield from self._rows(rows, call, datetime.now(UTC))
                        if not isinstance(rows, list) or len(rows) < PAGE:
                            break
                        first, last = first + PAGE, rows


def _same_page(rows: list[ApiRecord], before: list[ApiRecord]) -> bool:
    return bool(rows) and [r.record for r in rows] == [r.record for r in before]
