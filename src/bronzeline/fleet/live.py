"""Live activity as of now: the vehicles carry on from their last known positions and their
rows are inserted with recorded_at left to DEFAULT now(), as the real ingestion service does.

Used by `burst` (one transaction of a few minutes' activity) and `run_forever` (a steady load
with occasional long transactions, whose rows carry their transaction's start time and commit
late: the case bronzeline's snapshot-safe upper bound exists for).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.errors import SourceError
from bronzeline.fleet import writes
from bronzeline.fleet.model import CITIES, destination, ewkb_point, random_point, utc
from bronzeline.fleet.motion import Vehicle
from bronzeline.fleet.schema import SCHEMA, has_geometry

Row = tuple[Any, ...]
_LIVE_TABLES = ("position_history", "trips", "alarms", "parking_events", "device_events", "ingestion_log")


@dataclass
class Batch:
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in _LIVE_TABLES})
    live: list[Row] = field(default_factory=list)
    km: dict[str, float] = field(default_factory=dict)

    def take(self, imeis: set[str]) -> Batch:
        """Move the rows of `imeis` into a new batch (for the long transaction)."""
        taken = Batch()
        for table, rows in self.rows.items():
            if table != "ingestion_log":
                taken.rows[table] = [r for r in rows if r[0] in imeis]
                self.rows[table] = [r for r in rows if r[0] not in imeis]
        return taken


class LiveFleet:
    def __init__(self, rng: random.Random, geom: bool, now: float, vehicles: dict[str, Vehicle],
                 waking: set[str], gps_decimals: int) -> None:
        self.rng = rng
        self.geom = geom
        self.now = now
        self.vehicles = vehicles
        self.waking = waking  # silent units coming back online: they announce it with power_on
        self.gps_decimals = gps_decimals

    @classmethod
    def load(cls, conn: psycopg.Connection[Any], rng: random.Random, geom: bool, *, span_s: float,
             share: float = 0.6, rate: float | None = None) -> LiveFleet:
        """Pick units that reported in the last two days (and, for bursts, a silent one or two)
        and place them where live_positions last saw them, `span_s` before the source's now()."""
        row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        assert row is not None
        now = float(row[0])
        units = conn.execute(
            sql.SQL(
                """SELECT d.imei, d.city, p.lat, p.lng, extract(epoch FROM p.gps_time)::float8
                   FROM {}.devices d LEFT JOIN {}.live_positions p USING (imei) ORDER BY d.imei"""
            ).format(sql.Identifier(SCHEMA), sql.Identifier(SCHEMA))
        ).fetchall()
        recent = [u for u in units if u[4] is not None and u[4] > now - 2 * 86400]
        silent = [u for u in units if u not in recent]
        chosen = rng.sample(recent, max(1, math.ceil(len(recent) * share))) if recent else []
        waking = rng.sample(silent, min(len(silent), rng.randint(1, 2) if rate is None else 0))
        if not chosen and not waking:
            waking = silent[:3]
        count = len(chosen) + len(waking)
        # run_forever: as many fixes per second as asked; sub-second fixes keep milliseconds.
        interval = max(0.05, count / rate) if rate else 20.0
        vehicles: dict[str, Vehicle] = {}
        for imei, city_name, lat, lng, seen in [*chosen, *waking]:
            city = next((c for c in CITIES if c.name == city_name), CITIES[0])
            where = (lat, lng) if lat is not None else random_point(rng, city.lat, city.lng, city.radius_m)
            start = now - span_s if seen is None else max(now - span_s, seen + 1)
            vehicles[imei] = Vehicle(
                rng, city, where, start, position=where, always_working=True, fix_interval=interval,
                hop_m=(800.0, 3000.0), dwell_s=(200.0, 420.0) if rate is None else (20.0, 90.0),
            )
        return cls(rng, geom, now, vehicles, {u[0] for u in waking}, 0 if interval >= 1 else 3)

    def step(self, until: float, *, late_share: float = 0.0, poll_every: float = 60.0, track: bool = True,
             wake: bool = False) -> Batch:
        """Advance every vehicle to `until` and turn what happened into rows."""
        rng, batch = self.rng, Batch()
        for imei, vehicle in self.vehicles.items():
            if wake and imei in self.waking:
                batch.rows["device_events"].append((imei, "power_on", utc(round(vehicle.t))))
                self.waking.discard(imei)
            act = vehicle.advance(until)
            polled: dict[float, Row] = {}
            for fix in act.fixes:
                gps = utc(round(fix.t, self.gps_decimals) if self.gps_decimals else round(fix.t))
                row = self._position(imei, gps, fix.lat, fix.lng, fix.speed, fix.heading, fix.ignition)
                if track:
                    batch.rows["position_history"].append((*row[:7], "track_list", *row[7:]))
                polled[math.floor(fix.t / poll_every) if poll_every else fix.t] = row
            batch.rows["position_history"] += [(*r[:7], "poll", *r[7:]) for r in polled.values()]
            if act.fixes:
                batch.live.append(max(polled.values(), key=lambda r: r[1]))
            if rng.random() < late_share:
                # A unit flushing its buffer: fixes from hours ago arrive now, out of order.
                for _ in range(rng.randint(1, 5)):
                    lat, lng = destination(vehicle.lat, vehicle.lng, rng.uniform(0, 360), rng.uniform(50, 3000))
                    gps = utc(round(until - rng.uniform(3600, 3 * 3600)))
                    batch.rows["position_history"].append(
                        (*self._position(imei, gps, lat, lng, 0.0, 0, False)[:7], "track_list",
                         *((ewkb_point(lng, lat),) if self.geom else ()))
                    )
            for trip in act.trips:
                batch.rows["trips"].append((imei, utc(round(trip.start)), utc(round(trip.end)), trip.distance_m,
                                            trip.driving_s, trip.avg_kmh, trip.max_kmh))
                batch.km[imei] = batch.km.get(imei, 0.0) + trip.distance_m / 1000
            for park in act.parkings:
                batch.rows["parking_events"].append((imei, utc(round(park.start)), utc(round(park.end)),
                                                     round(park.end - park.start), park.lat, park.lng))
            batch.rows["alarms"] += [(imei, a.code, a.name, utc(round(a.t)), a.lat, a.lng) for a in act.alarms]
        if wake and self.vehicles and rng.random() < 0.3:
            batch.rows["device_events"].append((rng.choice(sorted(self.vehicles)), "tamper", utc(round(until))))
        return batch

    def _position(self, imei: str, gps: Any, lat: float, lng: float, speed: float, heading: int,
                  ignition: bool) -> Row:
        row: Row = (imei, gps, lat, lng, speed, heading, ignition)
        return (*row, ewkb_point(lng, lat)) if self.geom else row

    def write(self, conn: psycopg.Connection[Any], batch: Batch, *, devices: bool = True) -> dict[str, int]:
        """Insert a batch (recorded_at = this transaction's now()); returns rows per table."""
        counts: dict[str, int] = {}
        for table, rows in batch.rows.items():
            cols = writes.columns(table, self.geom, live=True)
            counts[table] = writes.insert_rows(conn, table, cols, rows, skip_conflicts=table == "position_history")
        counts["live_positions"] = writes.upsert_live(conn, batch.live, self.geom)
        if devices:
            counts["devices"] = writes.add_odometer(conn, batch.km)
        return counts

    def log_calls(self, conn: psycopg.Connection[Any], now: float, *, polls: int, rows: int) -> int:
        """The API calls that fetched the batch: location polls and one track-list call."""
        entries: list[Row] = []
        for i in range(polls):
            at = now - (polls - i) * 60 + self.rng.uniform(0, 2)
            entries.append(("jimi.user.device.location.list", utc(at), 200, len(self.vehicles),
                            round(self.rng.lognormvariate(math.log(600), 0.5)), None))
        entries.append(("jimi.device.track.list", utc(now - self.rng.uniform(1, 5)), 200, rows,
                        round(self.rng.lognormvariate(math.log(900), 0.5)), None))
        return writes.insert_rows(conn, "ingestion_log", writes.columns("ingestion_log", False, live=True), entries)


def run_forever(
    dsn: str,
    rate_per_second: float,
    long_transaction_every: float = 30.0,
    stop_after: float | None = None,
    *,
    long_transaction_seconds: float = 6.0,
    stop: threading.Event | None = None,
    seed: int | None = None,
    tick_seconds: float = 1.0,
) -> dict[str, int]:
    """Insert about `rate_per_second` position rows a second (plus trips, alarms, parkings,
    live positions and API log rows), committing every tick, until `stop` is set or
    `stop_after` seconds pass. Every `long_transaction_every` seconds (0 disables) half the
    units write through a second connection whose transaction stays open for
    `long_transaction_seconds`: its rows carry that transaction's start as recorded_at but
    become visible only at commit. Returns rows written per table plus `long_transactions`."""
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    stop = stop if stop is not None else threading.Event()
    rng = random.Random(seed)
    totals: Counter[str] = Counter()
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn) as long_conn:
        geom = has_geometry(conn, "position_history")
        fleet = LiveFleet.load(conn, rng, geom, span_s=0.0, share=1.0, rate=rate_per_second)
        conn.commit()
        if not fleet.vehicles:
            raise SourceError("tracksolid.devices is empty; seed the source first (--init)")
        started = time.monotonic()
        next_long = started + long_transaction_every if long_transaction_every > 0 else math.inf
        long_until: float | None = None
        long_imeis = set(sorted(fleet.vehicles)[::2])
        ticks = 0
        while not stop.is_set():
            tick_start = time.monotonic()
            if stop_after is not None and tick_start - started >= stop_after:
                break
            batch = fleet.step(time.time(), late_share=0.01, poll_every=0.0, track=False)
            if long_until is None and tick_start >= next_long:
                long_until = tick_start + long_transaction_seconds
            if long_until is not None:
                # Stays open across ticks: every row in it is stamped with its first statement's now().
                totals.update(fleet.write(long_conn, batch.take(long_imeis), devices=False))
                if tick_start >= long_until:
                    long_conn.commit()
                    totals["long_transactions"] += 1
                    long_until = None
                    next_long = tick_start + long_transaction_every
            totals.update(fleet.write(conn, batch, devices=ticks % 30 == 0))
            if ticks % 10 == 0:
                totals["ingestion_log"] += fleet.log_calls(conn, time.time(), polls=1, rows=len(batch.live))
            conn.commit()
            ticks += 1
            stop.wait(max(0.0, tick_start + tick_seconds - time.monotonic()))
        if long_until is not None:
            long_conn.commit()  # stopping cleanly: what the open transaction wrote is kept
            totals["long_transactions"] += 1
    return dict(totals)
