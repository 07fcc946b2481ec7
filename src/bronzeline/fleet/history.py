"""The seeded past: when did each thing a device observed reach the source database?

The reference fleet's ingestion service polls the vendor's API on fixed cadences, one call per chunk
of at most 50 IMEIs; a row's `recorded_at` is the moment the call that fetched it finished
(one insert transaction per call, so many rows share one value). Calls sometimes fail (rate
limit 1006, gateway errors, timeouts) and the next successful call picks the rows up; devices
lose coverage and upload buffered fixes later; some are unplugged. That is what makes
`gps_time` late and out of order relative to `recorded_at`, and what the watermark must survive.
"""

from __future__ import annotations

import bisect
import math
import operator
import random
from dataclasses import dataclass, field
from typing import Any

from bronzeline.fleet.model import Device, ewkb_point, random_point, utc
from bronzeline.fleet.motion import Activity, Fix, Vehicle

Row = tuple[Any, ...]
CHUNK = 50  # the vendor's limit of IMEIs per call
WARM_UP_S = 86400.0
# Where recorded_at stands in each incremental table's rows.
RECORDED_AT = {"position_history": 2, "trips": 7, "alarms": 6, "parking_events": 6, "device_events": 3,
               "ingestion_log": 6}  # simulate a day before the window, so vehicles are mid-routine at its start


@dataclass
class Endpoint:
    """One API endpoint's call schedule over the window, with failures and durations."""

    name: str
    period: float
    phase: float
    chunks: int
    fail_share: float
    log_every: int = 1  # the 60-s sweep logs one call in ten (plus every failure)
    calls: list[list[tuple[float, float]]] = field(default_factory=list)  # per chunk: (at, done)
    received: dict[tuple[int, int], int] = field(default_factory=dict)

    def plan(self, rng: random.Random, begin: float, end: float, log: list[list[Any]]) -> None:
        """Draw every call in [begin, end]; log those inside the visible window to `log`."""
        visible_from = begin + WARM_UP_S
        for chunk in range(self.chunks):
            done_calls: list[tuple[float, float]] = []
            first = math.ceil((begin - self.phase) / self.period)
            last = math.floor((end - self.phase) / self.period)
            for k in range(first, last + 1):
                at = k * self.period + self.phase + chunk * 2.0 + rng.uniform(0, 1.5)
                duration = min(29.0, rng.lognormvariate(math.log(0.6), 0.6))
                failure = _failure(rng) if rng.random() < self.fail_share else None
                if failure is not None and failure[0] is None:
                    duration = 30.0  # the client's timeout
                if at + duration > end:
                    continue
                if failure is None:
                    done_calls.append((at, at + duration))
                if at >= visible_from and (failure is not None or k % self.log_every == 0):
                    # rows_received is filled in by `finish_log` once rows are assigned.
                    status, error = failure if failure is not None else (200, None)
                    log.append([self.name, at, status, (chunk, len(done_calls) - 1) if failure is None else None,
                                round(duration * 1000), error, at + duration + 0.002])
            self.calls.append(done_calls)

    def deliver(self, available: float, chunk: int) -> float | None:
        """recorded_at of a row the vendor can serve from `available` on; None if not yet."""
        calls = self.calls[chunk]
        i = bisect.bisect_left(calls, (available, -1.0))
        if i >= len(calls):
            return None
        self.received[(chunk, i)] = self.received.get((chunk, i), 0) + 1
        return calls[i][1]

    def call_index(self, available: float, chunk: int) -> int:
        return bisect.bisect_left(self.calls[chunk], (available, -1.0))


def _failure(rng: random.Random) -> tuple[int | None, str]:
    return rng.choice(
        [
            (200, "code 1006: request frequency limit exceeded"),
            (200, "code 1006: request frequency limit exceeded"),
            (502, "502 Bad Gateway"),
            (504, "504 Gateway Timeout"),
            (None, "read timeout after 30 s"),
        ]
    )


def endpoints(devices: int) -> dict[str, Endpoint]:
    chunks = max(1, math.ceil(devices / CHUNK))
    return {
        # The location list and alarm list are per account (no IMEI list): one chunk.
        "poll": Endpoint("jimi.user.device.location.list", 60, 3, 1, 0.01, log_every=10),
        "track": Endpoint("jimi.device.track.list", 1800, 40, chunks, 0.04),
        "alarm": Endpoint("jimi.device.alarm.list", 600, 20, 1, 0.02),
        "trip": Endpoint("jimi.device.track.mileage", 3600, 300, chunks, 0.03),
        "parking": Endpoint("jimi.open.platform.report.parking", 3600, 330, chunks, 0.03),
        "token": Endpoint("jimi.oauth.token.refresh", 7200, 10, 1, 0.0),
    }


def build(rng: random.Random, fleet: list[Device], begin: float, end: float, geom: bool) -> dict[str, list[Row]]:
    """Rows for every tracksolid table (COPY column order, see writes.COLUMNS) for (begin, end]."""
    api = endpoints(len(fleet))
    log: list[list[Any]] = []
    for endpoint in api.values():
        endpoint.plan(rng, begin - WARM_UP_S, end, log)
    out: dict[str, list[Row]] = {t: [] for t in ("position_history", "trips", "alarms", "parking_events",
                                                 "device_events", "live_positions", "devices")}
    pushes: list[list[Any]] = []
    for index, device in enumerate(fleet):
        chunk = index // CHUNK
        odometer_m = 0.0
        if device.active:
            vehicle = Vehicle(rng, device.city, device.depot, begin - WARM_UP_S)
            act = vehicle.advance(end)
            odometer_m = sum(t.distance_m for t in act.trips)
            live = _device_rows(rng, device, chunk, act, api, begin, end, out, pushes, geom)
            if live is not None:
                out["live_positions"].append(live)
        elif rng.random() < 0.55:
            # A unit that reported once, weeks ago: its live row is stale, not absent.
            lat, lng = random_point(rng, device.city.lat, device.city.lng, device.city.radius_m)
            seen = begin - rng.uniform(1, 120) * 86400
            row: Row = (device.imei, utc(round(seen)), lat, lng, 0.0, rng.randint(0, 359), False, utc(seen + 41))
            out["live_positions"].append(row + ((ewkb_point(lng, lat),) if geom else ()))
        updated = end - rng.uniform(0, 3600) if device.active else device.created_at.timestamp() + rng.uniform(0, 86400)
        out["devices"].append((device.imei, device.plate, device.vehicle_name, device.driver_name, device.city.name,
                               device.device_model, device.fuel_per_100km,
                               round(device.odometer_km + odometer_m / 1000, 1), device.sim_active,
                               device.created_at, utc(updated)))
    for entry in log:
        ref = entry[3]
        which = next(e for e in api.values() if e.name == entry[0])
        entry[3] = which.received.get(ref, 0) if ref is not None else 0
    out["ingestion_log"] = [_times(e, (1, 6)) for e in log + pushes if begin < e[6] <= end]
    for table, position in RECORDED_AT.items():
        # Insert order is recorded_at order (ids grow with it). The sort is stable, so one call's
        # rows keep the vendor's gps_time order; late and out-of-order fixes come from the
        # delivery model above, not from shuffling.
        out[table].sort(key=operator.itemgetter(position))
    return out


def _device_rows(
    rng: random.Random, device: Device, chunk: int, act: Activity, api: dict[str, Endpoint],
    begin: float, end: float, out: dict[str, list[Row]], pushes: list[list[Any]], geom: bool,
) -> Row | None:
    imei = device.imei
    off = _outages(rng, begin, end)
    gaps = _outages(rng, begin, end, coverage=True)
    events: list[tuple[float, str]] = []
    for start, stop in off:
        events.append((start, "power_off"))
        if rng.random() < 0.3:
            events.append((start + rng.uniform(5, 40), "tamper"))
        if stop < end:
            events.append((stop, "power_on"))
    for t, kind in events:
        at = t + rng.uniform(2, 90)  # pushed by the vendor's /pushevent webhook
        if begin < at <= end:
            out["device_events"].append((imei, kind, utc(round(t)), utc(at)))
            pushes.append(["/pushevent", at - 0.05, 200, 1, 35, None, at + 0.001])

    def available(t: float) -> float | None:
        if any(a <= t < b for a, b in off):
            return None  # unplugged: never recorded
        gap_end = next((b for a, b in gaps if a <= t < b), None)
        return (gap_end if gap_end is not None else t) + rng.uniform(2, 25)

    last_poll: dict[int, tuple[Fix, float]] = {}
    for fix in act.fixes:
        ready = available(fix.t)
        if ready is None:
            continue
        recorded = api["track"].deliver(ready, chunk)
        if recorded is not None and begin < recorded <= end:
            out["position_history"].append(_fix_row(imei, fix, recorded, "track_list", geom))
        if not any(a <= fix.t < b for a, b in gaps):
            # The 60-s sweep sees only a unit's latest fix: keep the last one per sweep.
            last_poll[api["poll"].call_index(ready, 0)] = (fix, ready)
    live: Row | None = None
    for fix, ready in last_poll.values():
        recorded = api["poll"].deliver(ready, 0)
        if recorded is not None and begin < recorded <= end:
            out["position_history"].append(_fix_row(imei, fix, recorded, "poll", geom))
            if live is None or fix.t > live[1].timestamp():
                live = (imei, utc(round(fix.t)), fix.lat, fix.lng, fix.speed, fix.heading, fix.ignition,
                        utc(recorded)) + ((ewkb_point(fix.lng, fix.lat),) if geom else ())
    for trip in act.trips:
        recorded = api["trip"].deliver(trip.end + rng.uniform(30, 600), chunk)
        if recorded is not None and begin < recorded <= end and available(trip.end) is not None:
            out["trips"].append((imei, utc(round(trip.start)), utc(round(trip.end)), trip.distance_m,
                                 trip.driving_s, trip.avg_kmh, trip.max_kmh, utc(recorded)))
    for park in act.parkings:
        recorded = api["parking"].deliver(park.end + rng.uniform(30, 300), chunk)
        if recorded is not None and begin < recorded <= end and available(park.end) is not None:
            out["parking_events"].append((imei, utc(round(park.start)), utc(round(park.end)),
                                          round(park.end - park.start), park.lat, park.lng, utc(recorded)))
    for alarm in act.alarms:
        ready = available(alarm.t)
        recorded = api["alarm"].deliver(ready, 0) if ready is not None else None
        if recorded is not None and begin < recorded <= end:
            out["alarms"].append((imei, alarm.code, alarm.name, utc(round(alarm.t)), alarm.lat, alarm.lng,
                                  utc(recorded)))
    return live


def _outages(rng: random.Random, begin: float, end: float, coverage: bool = False) -> list[tuple[float, float]]:
    """Coverage gaps (fixes buffered, uploaded at the end) or power cuts (nothing recorded)."""
    spans: list[tuple[float, float]] = []
    if coverage:
        if rng.random() < 0.35:
            for _ in range(rng.randint(1, 3)):
                start = rng.uniform(begin, end)
                spans.append((start, start + rng.uniform(300, 3 * 3600)))
    elif rng.random() < 0.15:
        start = rng.uniform(begin, end)
        # One in three of these units is unplugged for good: no power_on follows.
        length = math.inf if rng.random() < 0.33 else rng.uniform(1200, 5 * 3600)
        spans.append((start, start + length))
    return spans


def _fix_row(imei: str, fix: Fix, recorded: float, source: str, geom: bool) -> Row:
    row: Row = (imei, utc(round(fix.t)), utc(recorded), fix.lat, fix.lng, fix.speed, fix.heading, fix.ignition,
                source)
    return (*row, ewkb_point(fix.lng, fix.lat)) if geom else row


def _times(entry: list[Any], at: tuple[int, ...]) -> Row:
    return tuple(utc(v) if i in at else v for i, v in enumerate(entry))
