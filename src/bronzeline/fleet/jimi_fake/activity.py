"""What each reporting device does, computed on the fly from the seed so any window is cheap: at most one
trip per device and hour (fixes every 10-30 s while it moves), alarms during trips, parking between them.
Nothing is stored; an LRU keeps recent hours."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from bronzeline.fleet.jimi_fake.fleet import FakeDevice
from bronzeline.fleet.model import random_point

SLOT_S = 3600
METRES_PER_DEGREE = 111_320.0
EAT_OFFSET_S = 3 * 3600  # local hours decide whether a vehicle is likely out
MIN_PARKING_S = 180  # shorter stops are traffic, not parking
SEARCH_SLOTS = 72  # how far parking and live positions look for the next or previous trip

ALARM_NAMES = {"ACC_ON": "ACC ON", "ACC_OFF": "ACC OFF", "6": "Overspeed alarm", "3": "Vibration alarm",
               "41": "Sudden acceleration", "48": "Sudden deceleration", "43": "Sharp turn right"}


class Point(NamedTuple):
    t: int  # epoch seconds, UTC
    lat: float
    lng: float
    speed: float  # km/h
    direction: int
    satellites: int
    odo_m: float  # metres since the trip started
    u_late: float  # uniform draws kept so the live knobs (late_share, malformed_share) can change any time
    u_delay: float
    u_bad: float


class Alarm(NamedTuple):
    t: int
    type_id: str
    lat: float
    lng: float
    speed: float


@dataclass(frozen=True)
class Trip:
    imei: str
    slot: int
    start: int
    end: int
    start_lat: float
    start_lng: float
    end_lat: float
    end_lng: float
    distance_m: int
    alarms: tuple[Alarm, ...]


class Parking(NamedTuple):
    imei: str
    start: int
    end: int
    lat: float
    lng: float


class Activity:
    def __init__(self, seed: int, devices: dict[str, FakeDevice]) -> None:
        self.seed = seed
        self.devices = devices
        self.points = lru_cache(maxsize=65_536)(self._points)
        self.trip = lru_cache(maxsize=200_000)(self._trip)

    def _points(self, imei: str, slot: int) -> tuple[Point, ...]:
        """The fixes of the device's trip in this hour (empty: it does not drive then)."""
        dev = self.devices[imei]
        if not dev.reporting:
            return ()
        rng = random.Random(f"{self.seed}|{imei}|{slot}")
        hour = (slot * SLOT_S + EAT_OFFSET_S) // 3600 % 24
        if rng.random() >= (0.7 if 6 <= hour < 20 else 0.08):
            return ()
        duration = rng.randint(300, 2700)
        t = slot * SLOT_S + rng.randint(60, SLOT_S - 60 - duration)
        end = t + duration
        lat, lng = random_point(rng, dev.city.lat, dev.city.lng, dev.city.radius_m)
        heading, speed, odo = rng.uniform(0, 360), rng.uniform(15, 45), 0.0
        # a flat-earth step is plenty over a city and keeps any window cheap to compute
        per_lng = METRES_PER_DEGREE * math.cos(math.radians(lat))
        out: list[Point] = []
        while True:
            draw = rng.random  # plain draws: randint is several times slower in this hot loop
            out.append(Point(t, round(lat, 6), round(lng, 6), round(speed, 1), int(heading) % 360,
                             6 + int(draw() * 9), round(odo, 1), draw(), draw(), draw()))
            step_s = 10 + int(draw() * 21)
            if t + step_s > end:
                return tuple(out)
            speed = min(98.0, max(5.0, speed + draw() * 24 - 12))
            heading = (heading + draw() * 60 - 30) % 360
            metres = speed / 3.6 * step_s
            rad = math.radians(heading)
            lat += metres * math.cos(rad) / METRES_PER_DEGREE
            lng += metres * math.sin(rad) / per_lng
            odo += metres
            t += step_s

    def _trip(self, imei: str, slot: int) -> Trip | None:
        pts = self.points(imei, slot)
        if not pts:
            return None
        first, last = pts[0], pts[-1]
        rng = random.Random(f"{self.seed}|{imei}|{slot}|alarms")
        alarms = [Alarm(first.t, "ACC_ON", first.lat, first.lng, first.speed),
                  Alarm(last.t, "ACC_OFF", last.lat, last.lng, last.speed)]
        fastest = max(pts, key=lambda p: p.speed)
        if fastest.speed > 80:
            alarms.append(Alarm(fastest.t, "6", fastest.lat, fastest.lng, fastest.speed))
        for type_id, share in (("41", 0.25), ("48", 0.25), ("43", 0.2), ("3", 0.05)):
            if rng.random() < share:  # one alarm per type and trip: (imei, type, time) stays unique
                p = pts[rng.randrange(len(pts))]
                alarms.append(Alarm(p.t, type_id, p.lat, p.lng, p.speed))
        return Trip(imei, slot, first.t, last.t, first.lat, first.lng, last.lat, last.lng, round(last.odo_m),
                    tuple(alarms))

    def trips(self, imei: str, low: int, high: int) -> Iterator[Trip]:
        """Trips starting in [low, high], in time order."""
        for slot in range(low // SLOT_S, high // SLOT_S + 1):
            trip = self.trip(imei, slot)
            if trip is not None and low <= trip.start <= high:
                yield trip

    def window_points(self, imei: str, low: int, high: int) -> Iterator[Point]:
        """Fixes with low <= t <= high, in time order (visibility is the caller's business)."""
        for slot in range(low // SLOT_S, high // SLOT_S + 1):
            for p in self.points(imei, slot):
                if low <= p.t <= high:
                    yield p

    def parkings(self, imei: str, low: int, high: int, now: int) -> Iterator[Parking]:
        """Stops between two trips that started in [low, high] and had ended by `now` (a vehicle still
        parked has no row yet)."""
        for trip in self.trips(imei, low - SLOT_S, high):
            if not low <= trip.end <= high:
                continue
            following = self.next_trip(imei, trip.slot)
            if following is None or following.start > now or following.start - trip.end < MIN_PARKING_S:
                continue
            yield Parking(imei, trip.end, following.start, trip.end_lat, trip.end_lng)

    def next_trip(self, imei: str, slot: int) -> Trip | None:
        for later in range(slot + 1, slot + 1 + SEARCH_SLOTS):
            trip = self.trip(imei, later)
            if trip is not None:
                return trip
        return None

    def latest_fix(self, imei: str, now: int, late_share: float) -> tuple[Point, Trip] | None:
        """The newest real-time fix at or before `now` (re-transmitted fixes are never the live position)."""
        for slot in range(now // SLOT_S, now // SLOT_S - SEARCH_SLOTS, -1):
            trip = self.trip(imei, slot)
            if trip is None or trip.start > now:
                continue
            seen = [p for p in self.points(imei, slot) if p.t <= now and p.u_late >= late_share]
            if seen:
                return seen[-1], trip
        return None
