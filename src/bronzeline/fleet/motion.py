"""One vehicle's day: drive to jobs along road-like paths, park, go home at night.

Produces what the device itself observes (fixes, trips, parkings, alarms) with device-clock
times; when each of these reaches the database is decided elsewhere (history.py for the
seeded past, the live writers for now).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import NamedTuple

from bronzeline.fleet.model import EAT_OFFSET_S, City, bearing_deg, destination, haversine_m, random_point

HEARTBEAT_S = 900.0  # a parked, ignition-off unit still reports about every 15 minutes
MIN_PARKING_S = 180.0  # shorter stops are traffic, not parking (the vendor's threshold)


class Fix(NamedTuple):
    t: float  # device clock, epoch seconds
    lat: float
    lng: float
    speed: float  # km/h
    heading: int
    ignition: bool


class Trip(NamedTuple):
    start: float
    end: float
    distance_m: int
    driving_s: int
    avg_kmh: float
    max_kmh: float


class Parking(NamedTuple):
    start: float
    end: float
    lat: float
    lng: float


class Alarm(NamedTuple):
    t: float
    code: str  # the vendor's alertTypeId
    name: str  # the vendor's alarmTypeName
    lat: float
    lng: float


@dataclass
class _Drive:
    """A drive under way: where it goes and what it has measured so far."""

    path: list[tuple[float, float]]
    start: float
    total: float
    highway: bool
    cruise: float
    home: bool
    leg: int = 1
    done: float = 0.0
    moving_s: float = 0.0
    top: float = 0.0
    speed: float = 0.0
    stopped_steps: int = 0
    overspeed: bool = False


@dataclass
class Activity:
    fixes: list[Fix] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    parkings: list[Parking] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)

    def extend(self, other: Activity) -> None:
        self.fixes += other.fixes
        self.trips += other.trips
        self.parkings += other.parkings
        self.alarms += other.alarms


class Vehicle:
    """A vehicle whose state carries over between calls to `advance`, so the live writers can
    continue where the seeded history (or the previous tick) stopped."""

    def __init__(
        self,
        rng: random.Random,
        city: City,
        depot: tuple[float, float],
        start: float,
        *,
        position: tuple[float, float] | None = None,
        always_working: bool = False,
        fix_interval: float = 20.0,
        hop_m: tuple[float, float] | None = None,
        dwell_s: tuple[float, float] = (900.0, 9000.0),
    ) -> None:
        self.rng = rng
        self.city = city
        self.depot = depot
        self.lat, self.lng = position if position is not None else depot
        self.t = start
        self.always_working = always_working
        self.fix_interval = fix_interval
        self.hop_m = hop_m  # jobs this far from the current spot, instead of anywhere in the city
        self.dwell_s = dwell_s
        self.parked_since: float | None = start
        self.parked_until = start
        self.next_heartbeat = start + rng.uniform(0, HEARTBEAT_S)
        self.acc_alarms = rng.random() < 0.6  # not every unit is configured to raise ACC alarms
        self.odometer_m = 0.0
        self.drive: _Drive | None = None
        self._shifts: dict[int, tuple[float, float] | None] = {}

    def advance(self, until: float) -> Activity:
        """Simulate up to `until`; a drive still under way then is continued by the next call."""
        act = Activity()
        while self.t < until:
            if self.drive is not None:
                if not self._continue(until, act):
                    break  # the next fix would be after `until`
            elif self.parked_until > self.t:
                self._park(min(self.parked_until, until), act)
            elif self.always_working or self._shift_at(self.t):
                self._depart(self._next_job(), home=False, act=act)
            elif haversine_m(self.lat, self.lng, *self.depot) > 300:
                self._depart(self.depot, home=True, act=act)
            else:
                self.parked_until = self._next_shift_start(self.t)
        return act

    def _next_job(self) -> tuple[float, float]:
        for _ in range(20):
            if self.hop_m is not None:
                dest = destination(self.lat, self.lng, self.rng.uniform(0, 360), self.rng.uniform(*self.hop_m))
            else:
                dest = random_point(self.rng, self.city.lat, self.city.lng, self.city.radius_m)
            if haversine_m(self.lat, self.lng, *dest) > 400:
                return dest
        return destination(self.lat, self.lng, self.rng.uniform(0, 360), 1500)

    def _park(self, until: float, act: Activity) -> None:
        while self.next_heartbeat <= until:
            # GPS drift of a few metres while standing still.
            lat, lng = destination(self.lat, self.lng, self.rng.uniform(0, 360), abs(self.rng.gauss(0, 4)))
            act.fixes.append(Fix(self.next_heartbeat, lat, lng, 0.0, self.rng.randint(0, 359), False))
            if self.rng.random() < 0.004:
                act.alarms.append(Alarm(self.next_heartbeat, "3", "Vibration alarm", lat, lng))
            self.next_heartbeat += HEARTBEAT_S + self.rng.uniform(-60, 60)
        self.t = until

    def _depart(self, dest: tuple[float, float], home: bool, act: Activity) -> None:
        if self.parked_since is not None and self.t - self.parked_since >= MIN_PARKING_S:
            act.parkings.append(Parking(self.parked_since, self.t, self.lat, self.lng))
        self.parked_since = None
        if self.acc_alarms:
            act.alarms.append(Alarm(self.t, "ACC_ON", "ACC ON", self.lat, self.lng))
        path = self._route(dest)
        total = sum(haversine_m(*a, *b) for a, b in itertools.pairwise(path))
        # Cross-town trips use a faster road for their middle part.
        highway = haversine_m(self.lat, self.lng, *dest) > 6000
        self.drive = _Drive(path, self.t, total, highway, self.rng.uniform(22, 42), home)

    def _continue(self, until: float, act: Activity) -> bool:
        """Drive on towards the destination; True on arrival, False when `until` comes first."""
        rng, d = self.rng, self.drive
        assert d is not None
        while d.leg < len(d.path):
            dt = self.fix_interval * rng.uniform(0.9, 1.1)
            if self.t + dt > until:
                return False
            target = d.cruise * (2.1 if d.highway and 0.2 < d.done / max(d.total, 1.0) < 0.8 else 1.0)
            if d.stopped_steps > 0:
                d.stopped_steps, new = d.stopped_steps - 1, 0.0
            elif rng.random() < 0.05:  # junctions and jams
                d.stopped_steps, new = rng.randint(0, 3), 0.0
            else:
                new = min(110.0, max(4.0, d.speed + 0.5 * (target - d.speed) + rng.gauss(0, 6)))
            step = (d.speed + new) / 2 / 3.6 * dt
            d.moving_s += dt if new > 0 else 0.0
            if d.speed - new > 28 and rng.random() < 0.3:
                act.alarms.append(Alarm(self.t + dt, "129", "Harsh braking", self.lat, self.lng))
            if new > 80 and not d.overspeed:
                d.overspeed = True
                act.alarms.append(Alarm(self.t + dt, "6", "Overspeed alarm", self.lat, self.lng))
            d.speed, d.top = new, max(d.top, new)
            heading = self._walk(d, step)
            self.t += dt
            arrived = d.leg >= len(d.path)
            act.fixes.append(Fix(self.t, self.lat, self.lng, 0.0 if arrived else round(d.speed, 1),
                                 round(heading) % 360, not arrived))
        self.odometer_m += d.done
        hours = max(self.t - d.start, 1.0) / 3600
        act.trips.append(Trip(d.start, self.t, round(d.done), round(d.moving_s),
                              round(d.done / 1000 / hours, 2), round(d.top, 2)))
        if self.acc_alarms:
            act.alarms.append(Alarm(self.t + 5, "ACC_OFF", "ACC OFF", self.lat, self.lng))
        self.parked_since = self.t
        self.next_heartbeat = self.t + HEARTBEAT_S
        self.parked_until = self._next_shift_start(self.t) if d.home else self.t + rng.uniform(*self.dwell_s)
        self.drive = None
        return True

    def _walk(self, d: _Drive, step: float) -> float:
        """Move `step` metres along the path, across waypoints if need be; return the heading."""
        heading = 0.0
        while step > 0 and d.leg < len(d.path):
            to_next = haversine_m(self.lat, self.lng, *d.path[d.leg])
            heading = bearing_deg(self.lat, self.lng, *d.path[d.leg])
            if step >= to_next:
                self.lat, self.lng = d.path[d.leg]
                step -= to_next
                d.done += to_next
                d.leg += 1
            else:
                self.lat, self.lng = destination(self.lat, self.lng, heading, step)
                d.done += step
                step = 0.0
        return heading

    def _route(self, dest: tuple[float, float]) -> list[tuple[float, float]]:
        """Waypoints that bend off the straight line, so road distance runs 1.1-1.5x the crow's."""
        start = (self.lat, self.lng)
        straight = haversine_m(*start, *dest)
        bearing = bearing_deg(*start, *dest)
        points = [start]
        bends = min(5, 1 + int(straight // 2500))
        for i in range(1, bends + 1):
            along = destination(*start, bearing, straight * i / (bends + 1))
            side = self.rng.choice((-90.0, 90.0))
            points.append(destination(*along, bearing + side, straight * self.rng.uniform(0.02, 0.18)))
        points.append(dest)
        return points

    def _shift_at(self, t: float) -> bool:
        shift = self._shift(_local_day(t))
        return shift is not None and shift[0] <= t < shift[1]

    def _shift(self, day: int) -> tuple[float, float] | None:
        """(start, end) of the working day `day` (days since the epoch, local), None for a day off."""
        if day not in self._shifts:
            weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
            off = {5: 0.45, 6: 0.75}.get(weekday, 0.05)
            if self.rng.random() < off:
                self._shifts[day] = None
            else:
                begin = day * 86400 - EAT_OFFSET_S + self.rng.uniform(6.5, 9.0) * 3600
                self._shifts[day] = (begin, begin + self.rng.uniform(8.0, 11.0) * 3600)
        return self._shifts[day]

    def _next_shift_start(self, t: float) -> float:
        day = _local_day(t)
        for offset in range(14):
            shift = self._shift(day + offset)
            if shift is not None and shift[0] > t:
                return shift[0]
        return t + 86400


def _local_day(t: float) -> int:
    return math.floor((t + EAT_OFFSET_S) / 86400)
