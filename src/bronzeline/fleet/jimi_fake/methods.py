"""The fake's data methods: the vendor's record shapes, windows and paging, and the ground truth tests
compare against. Where the vendor's behaviour is not documented the choice is marked [inf]."""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any

from bronzeline.fleet.jimi_fake.activity import ALARM_NAMES, Activity, Alarm, Parking, Point, Trip
from bronzeline.fleet.jimi_fake.fleet import FakeDevice, FakeSettings, detail_record, list_record

DAY = 86400
Params = dict[str, str]
Reply = tuple[Any, Any]  # (result, data)


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@lru_cache(maxsize=1 << 20)
def fmt(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def _time(params: Params, name: str) -> int:
    try:
        return calendar.timegm(time.strptime(params[name], "%Y-%m-%d %H:%M:%S"))
    except (KeyError, ValueError):
        raise ApiError(1001, f"Parameter error: {name}") from None


def _int(params: Params, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(params.get(name) or default)
    except ValueError:
        raise ApiError(1001, f"Parameter error: {name}") from None
    if not low <= value <= high:
        raise ApiError(1001, f"Parameter error: {name}")
    return value


class Methods:
    def __init__(self, settings: FakeSettings, devices: list[FakeDevice]) -> None:
        self.s = settings
        self.devices = {d.imei: d for d in devices}
        self.by_target: dict[str, list[FakeDevice]] = {t: [] for t in settings.targets}
        for d in devices:
            self.by_target[d.target].append(d)
        self.activity = Activity(settings.seed, self.devices)
        self.table: dict[str, Callable[[Params, int], Reply]] = {
            "jimi.user.device.list": self.device_list, "jimi.track.device.detail": self.device_detail,
            "jimi.user.device.location.list": self.location_list, "jimi.device.location.get": self.location_get,
            "jimi.device.track.list": self.track_list, "jimi.device.alarm.list": self.alarm_list,
            "jimi.device.track.mileage": self.track_mileage, "jimi.open.platform.report.parking": self.parking,
        }

    # ------------------------------------------------------------------ parameters
    def target(self, params: Params, name: str = "target") -> str:
        value = params.get(name, "")
        if value not in self.by_target:
            raise ApiError(1002 if value else 1001, "illegal user" if value else f"Parameter error: {name}")
        return value

    def imeis(self, params: Params, name: str = "imeis") -> list[str]:
        wanted = [i.strip() for i in params.get(name, "").split(",") if i.strip()]
        if not wanted:
            raise ApiError(1001, f"Parameter error: {name}")
        if len(wanted) > self.s.max_imeis:
            raise ApiError(1001, f"Parameter error: at most {self.s.max_imeis} imeis")
        for imei in wanted:
            if imei not in self.devices:
                raise ApiError(1002, f"Illegal device{imei}")
        return wanted

    def window(self, params: Params, now: int, max_days: int, names: tuple[str, str] = ("begin_time", "end_time"),
               ) -> tuple[int, int]:
        low, high = _time(params, names[0]), _time(params, names[1])
        if high < low or high - low > max_days * DAY:
            raise ApiError(1001, f"Parameter error: the window must be at most {max_days} days")
        if low < now - self.s.history_days * DAY:
            raise ApiError(1001, f"Parameter error: only the last {self.s.history_days} days can be read")
        return low, high

    # ------------------------------------------------------------------ records
    def track_record(self, p: Point, now: int) -> dict[str, Any] | None:
        """The point as track.list serves it, or None while it is not visible yet (a late fix)."""
        late = p.u_late < self.s.late_share
        if late:
            lo, hi = self.s.late_delay_s
            if p.t + lo + int(p.u_delay * (hi - lo + 1)) > now:
                return None
        elif p.t > now:
            return None
        rec: dict[str, Any] = {"lat": p.lat, "lng": p.lng, "gpsTime": fmt(p.t), "direction": p.direction,
                               "gpsSpeed": p.speed, "posType": 1, "satellite": p.satellites,
                               "ignition": "ON", "accStatus": "1", "gpsMode": 1 if late else 0}
        if p.u_bad < self.s.malformed_share:  # a broken record for the load's malformed → raw path
            if p.u_bad < self.s.malformed_share / 2:
                rec["gpsTime"] = "not a time"
            else:
                del rec["lat"]
        return rec

    def alarm_record(self, dev: FakeDevice, a: Alarm) -> dict[str, Any]:
        return {"deviceName": dev.device_name, "imei": dev.imei, "model": dev.model, "account": dev.target,
                "alertTypeId": a.type_id, "alarmTypeName": ALARM_NAMES[a.type_id], "alertTime": fmt(a.t),
                "positioningTime": fmt(a.t), "lat": a.lat, "lng": a.lng, "speed": f"{a.speed:.1f}", "geoid": ""}

    def trip_record(self, trip: Trip) -> dict[str, Any]:
        run = trip.end - trip.start
        distance: float = trip.distance_m if self.s.mileage_unit == "m" else round(trip.distance_m / 1000, 3)
        return {"imei": trip.imei, "startTime": fmt(trip.start), "endTime": fmt(trip.end),
                "startLat": trip.start_lat, "startLng": trip.start_lng, "endLat": trip.end_lat,
                "endLng": trip.end_lng, "runTimeSecond": run, "elapsed": run, "distance": distance,
                "avgSpeed": round(trip.distance_m / run * 3.6, 1) if run else 0.0}

    def parking_record(self, dev: FakeDevice, p: Parking) -> dict[str, Any]:
        return {"imei": dev.imei, "startTime": iso(p.start), "endTime": iso(p.end), "durSecond": str(p.end - p.start),
                "stopSecond": p.end - p.start, "lng": p.lng, "lat": p.lat, "addr": "", "deviceName": dev.device_name,
                "mcType": dev.model, "acc": "0"}

    def location_record(self, dev: FakeDevice, now: int) -> dict[str, Any]:
        fix = self.activity.latest_fix(dev.imei, now, self.s.late_share) if dev.reporting else None
        if fix is None:
            lat, lng = round(dev.home[0], 6), round(dev.home[1], 6)
            seen = int(dev.last_seen.timestamp())
            gps, speed, direction, moving, sats = seen, 0.0, 0, False, 0
            hb = max(seen, now - now % 900) if dev.reporting else seen
        else:
            p, trip = fix
            lat, lng, gps, speed, direction, sats = p.lat, p.lng, p.t, p.speed, p.direction, p.satellites
            moving = now <= trip.end
            hb = max(p.t, now - now % 900)
        return {"imei": dev.imei, "deviceName": dev.device_name, "mcType": dev.model, "icon": "automobile",
                "status": "1" if dev.reporting else "0", "lat": lat, "lng": lng, "expireFlag": "1",
                "activationFlag": "1", "posType": "GPS", "locDesc": "", "gpsTime": fmt(gps), "hbTime": fmt(hb),
                "speed": f"{speed if moving else 0.0:.1f}", "accStatus": "1" if moving else "0", "electQuantity": "",
                "powerValue": "", "batteryPowerVal": "", "distance": "", "temperature": "", "trackerOil": "",
                "gpsSignal": "4" if sats else "0", "gpsNum": str(sats), "direction": str(direction),
                "currentMileage": f"{dev.odometer_km:.1f}", "confidence": "", "account": dev.target,
                "customerName": dev.target.title()}

    # ------------------------------------------------------------------ what a window holds
    def points(self, imei: str, low: int, high: int, now: int) -> Iterator[dict[str, Any]]:
        for p in self.activity.window_points(imei, low, high):
            rec = self.track_record(p, now)
            if rec is not None:
                yield rec

    def alarms(self, imeis: list[str], low: int, high: int, now: int) -> list[dict[str, Any]]:
        rows = [(a.t, imei, a) for imei in imeis for trip in self.activity.trips(imei, low - 3600, high)
                for a in trip.alarms if low <= a.t <= high and a.t <= now]
        rows.sort(key=lambda r: (-r[0], r[1], r[2].type_id))  # newest first [inf]
        return [self.alarm_record(self.devices[imei], a) for _, imei, a in rows]

    def trips(self, imeis: list[str], low: int, high: int, now: int) -> list[Trip]:
        # a trip is served once it has ended [inf]: the table's lookback must cover the longest trip
        found = [t for imei in imeis for t in self.activity.trips(imei, low, high) if t.end <= now]
        return sorted(found, key=lambda t: (t.start, t.imei))

    def parkings(self, imeis: list[str], low: int, high: int, now: int) -> list[dict[str, Any]]:
        found = [p for imei in imeis for p in self.activity.parkings(imei, low, high, now)]
        found.sort(key=lambda p: (p.start, p.imei))
        return [self.parking_record(self.devices[p.imei], p) for p in found]

    # ------------------------------------------------------------------ methods
    def device_list(self, params: Params, now: int) -> Reply:
        return [list_record(d) for d in self.by_target[self.target(params)]], None

    def device_detail(self, params: Params, now: int) -> Reply:
        imei = params.get("imei", "")
        if imei not in self.devices:
            raise ApiError(1002 if imei else 1001, f"Illegal device{imei}")
        return detail_record(self.devices[imei]), None

    def location_list(self, params: Params, now: int) -> Reply:
        return [self.location_record(d, now) for d in self.by_target[self.target(params)]], None

    def location_get(self, params: Params, now: int) -> Reply:
        return [self.location_record(self.devices[i], now) for i in self.imeis(params)], None

    def track_list(self, params: Params, now: int) -> Reply:
        imei = params.get("imei", "")
        if imei not in self.devices:
            raise ApiError(1002 if imei else 1001, f"IMEI does not exist{imei}")
        low, high = self.window(params, now, 7)
        rows = list(self.points(imei, low, high, now))
        trips = {t.slot: t for t in self.activity.trips(imei, low - 3600, high)}
        metres = sum(t.distance_m for t in trips.values() if low <= t.start and t.end <= high)
        return rows, {"mileage": metres}  # unit not documented: metres [inf]

    def alarm_list(self, params: Params, now: int) -> Reply:
        imeis = self.imeis(params, "imeis") if params.get("imeis") else self.imeis(params, "imei")
        if "begin_time" in params or "end_time" in params:
            low, high = self.window(params, now, 31)
            cap = self.s.alarm_max_rows
        else:  # no window: the latest 50 of the last month
            low, high, cap = now - 30 * DAY, now, 50
        rows = self.alarms(imeis, low, high, now)[:cap]
        if params.get("alertTypeId"):
            rows = [r for r in rows if r["alertTypeId"] == params["alertTypeId"]]
        page, size = _int(params, "page_no", 1, 1, 10**6), _int(params, "page_size", 50, 1, 100)
        if self.s.ignore_paging:
            return rows, None
        return rows[(page - 1) * size:page * size], None

    def track_mileage(self, params: Params, now: int) -> Reply:
        imeis = self.imeis(params)
        low, high = self.window(params, now, 31)
        trips = self.trips(imeis, low, high, now)
        totals = {imei: 0 for imei in imeis}
        for t in trips:
            totals[t.imei] += t.distance_m
        rows = [self.trip_record(t) for t in trips]
        if (params.get("start_row") or params.get("page_size")) and not self.s.ignore_paging:
            first = max(1, _int(params, "start_row", 1, 0, 10**9))  # 1-based, 0 read as 1 [inf]
            rows = rows[first - 1:first - 1 + _int(params, "page_size", 100, 1, 1000)]
        unit = 1 if self.s.mileage_unit == "m" else 1000
        return rows, [{"imei": i, "totalMileage": m / unit if unit > 1 else m} for i, m in totals.items()]

    def parking(self, params: Params, now: int) -> Reply:
        account = self.target(params, "account")
        imeis = self.imeis(params)
        for name in ("start_row", "page_size", "acc_type"):  # all required per the doc
            if not params.get(name):
                raise ApiError(1001, f"Parameter error: {name}")
        if any(self.devices[i].target != account for i in imeis):
            raise ApiError(1002, "Illegal device")
        low, high = self.window(params, now, 31, ("start_time", "end_time"))
        kind = params["acc_type"].lower()
        if kind not in ("off", "0", "on", "1"):  # the doc says on/off, one client says 0 [conflict]: both
            raise ApiError(1001, "Parameter error: acc_type")
        rows = self.parkings(imeis, low, high, now) if kind in ("off", "0") else []  # the fake never idles
        first = max(1, _int(params, "start_row", 1, 0, 10**9))  # 1-based, 0 read as 1 [inf]
        page = rows if self.s.ignore_paging else rows[first - 1:first - 1 + _int(params, "page_size", 100, 1, 1000)]
        total = sum(int(r["durSecond"]) for r in rows)
        return None, {"totalTime": total, "dataTotalRows": len(rows), "rows": page}

    # ------------------------------------------------------------------ ground truth
    def truth(self, what: str, imeis: list[str], low: int, high: int, now: int) -> list[dict[str, Any]]:
        if what == "jimi.user.device.list":
            return [list_record(self.devices[i]) for i in imeis]
        if what == "jimi.track.device.detail":
            return [detail_record(self.devices[i]) for i in imeis]
        if what in ("jimi.device.location.get", "jimi.user.device.location.list"):
            return [self.location_record(self.devices[i], now) for i in imeis]
        if what == "jimi.device.track.list":
            return [{"imei": i, **r} for i in imeis for r in self.points(i, low, high, now)]
        if what == "jimi.device.alarm.list":
            return self.alarms(imeis, low, high, now)
        if what == "jimi.device.track.mileage":
            return [self.trip_record(t) for t in self.trips(imeis, low, high, now)]
        if what == "jimi.open.platform.report.parking":
            return self.parkings(imeis, low, high, now)
        raise ValueError(f"no ground truth for {what!r}")


def window_bounds(start: datetime, end: datetime) -> tuple[int, int]:
    """A window (start, end] as the inclusive whole seconds it holds."""
    return math.floor(start.timestamp()) + 1, math.floor(end.timestamp())
