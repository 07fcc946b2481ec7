"""The reference fleet's shape: cities, device registry, IMEIs, plates, and the geometry helpers
the simulator needs (distances, moving along a bearing, hex EWKB points)."""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EARTH_RADIUS_M = 6_371_000.0
# East Africa Time has no daylight saving: shift hours are computed with a fixed offset.
EAT_OFFSET_S = 3 * 3600


@dataclass(frozen=True)
class City:
    name: str
    code: str
    lat: float
    lng: float
    radius_m: float  # where jobs are: the built-up area around the centre
    plate_prefix: str
    share: float  # fraction of the registered fleet


CITIES: tuple[City, ...] = (
    City("Nairobi", "NBO", -1.2864, 36.8172, 14_000, "K", 0.82),
    City("Mombasa", "MBA", -4.0435, 39.6682, 9_000, "K", 0.14),
    City("Kampala", "KLA", 0.3476, 32.5825, 8_000, "U", 0.04),
)

# IMEI prefix (TAC start) -> device model, as in the reference fleet; weights are the fleet's mix.
DEVICE_FAMILIES: tuple[tuple[str, str, float], ...] = (
    ("353549", "AT4", 0.35),
    ("862798", "X3", 0.25),
    ("865135", "JC400P", 0.25),
    ("359857", "GT06N", 0.15),
)

_KINDS = ("Pickup", "Van", "Probox", "Hilux", "Canter", "Motorbike")
_FIRST = ("John", "Peter", "Mary", "James", "Grace", "David", "Faith", "Joseph", "Brian",
          "Kevin", "Esther", "Samuel", "Moses", "Ann", "Dennis", "Collins", "Isaac", "Ruth")
_LAST = ("Kamau", "Otieno", "Wanjiku", "Mwangi", "Ochieng", "Njoroge", "Achieng", "Kiptoo",
         "Mutua", "Wafula", "Omondi", "Chebet", "Kariuki", "Nyambura", "Okello", "Ssemakula")
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


@dataclass
class Device:
    imei: str
    plate: str
    vehicle_name: str
    driver_name: str | None
    city: City
    device_model: str
    fuel_per_100km: float | None
    odometer_km: float
    sim_active: bool
    created_at: datetime
    active: bool  # reports during the simulated period (only a minority do)
    depot: tuple[float, float]  # (lat, lng) where the vehicle spends the night


def luhn_digit(digits: str) -> str:
    """IMEIs end with a Luhn check digit over the first 14."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def make_imei(rng: random.Random, prefix: str) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(14 - len(prefix)))
    return body + luhn_digit(body)


def make_plate(rng: random.Random, city: City) -> str:
    """'KDK 829A' in Kenya, 'UBJ 412K' in Uganda."""
    second = rng.choice("BCD") if city.plate_prefix == "K" else rng.choice("AB")
    return f"{city.plate_prefix}{second}{rng.choice(_LETTERS)} {rng.randint(100, 999)}{rng.choice(_LETTERS)}"


def random_point(rng: random.Random, lat: float, lng: float, radius_m: float) -> tuple[float, float]:
    """A point within radius_m of (lat, lng), denser near the centre like a city's jobs."""
    distance = radius_m * math.sqrt(rng.random()) * rng.uniform(0.3, 1.0)
    return destination(lat, lng, rng.uniform(0, 360), distance)


def make_fleet(rng: random.Random, count: int, now: datetime, active_share: float) -> list[Device]:
    """`count` registered devices; about `active_share` of them report, with every city among them."""
    cities = _city_assignment(rng, count)
    active_count = max(1, min(count, round(count * active_share)))
    active = set(rng.sample(range(count), active_count))
    # The demo should show all three cities live: promote one device of any city left out.
    for city in CITIES:
        members = [i for i, c in enumerate(cities) if c is city]
        if members and not active.intersection(members) and len(active) < count:
            active.add(rng.choice(members))
    seen: set[str] = set()
    devices: list[Device] = []
    numbers = {city.code: 0 for city in CITIES}
    for i, city in enumerate(cities):
        prefix = rng.choices([f[0] for f in DEVICE_FAMILIES], [f[2] for f in DEVICE_FAMILIES])[0]
        imei = make_imei(rng, prefix)
        while imei in seen:
            imei = make_imei(rng, prefix)
        seen.add(imei)
        numbers[city.code] += 1
        model = next(f[1] for f in DEVICE_FAMILIES if f[0] == prefix)
        age_days = rng.uniform(20, 900)
        # Old vehicles carry 200,000+ km; newer ones less.
        odometer = age_days * rng.uniform(60, 260) + (rng.uniform(150_000, 230_000) if age_days > 600 else 0)
        devices.append(
            Device(
                imei=imei,
                plate=make_plate(rng, city),
                vehicle_name=f"{rng.choice(_KINDS)} {city.code}-{numbers[city.code]:03d}",
                driver_name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.4 else None,
                city=city,
                device_model=model,
                fuel_per_100km=round(rng.uniform(6.5, 14.5), 2) if rng.random() < 0.7 else None,
                odometer_km=round(odometer, 1),
                sim_active=i in active or rng.random() < 0.45,
                created_at=now - timedelta(days=age_days, seconds=rng.uniform(0, 86400)),
                active=i in active,
                depot=random_point(rng, city.lat, city.lng, city.radius_m * 0.5),
            )
        )
    return devices


def _city_assignment(rng: random.Random, count: int) -> list[City]:
    """The reference fleet's shares, with a handful of Kampala units and at least one per city."""
    sizes = [max(1, round(count * city.share)) for city in CITIES] if count >= len(CITIES) else [count, 0, 0]
    sizes[0] = count - sum(sizes[1:])
    cities = [city for city, size in zip(CITIES, sizes, strict=True) for _ in range(size)]
    rng.shuffle(cities)
    return cities


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return (math.degrees(math.atan2(x, y)) + 360.0) % 360.0


def destination(lat: float, lng: float, bearing: float, distance_m: float) -> tuple[float, float]:
    """The point distance_m from (lat, lng) along `bearing` (degrees from north)."""
    d = distance_m / EARTH_RADIUS_M
    b, p1, l1 = math.radians(bearing), math.radians(lat), math.radians(lng)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def ewkb_point(lng: float, lat: float, srid: int = 4326) -> str:
    """Hex EWKB of POINT(lng lat) with its SRID: what PostGIS's geometry input reads in COPY."""
    return struct.pack("<BIIdd", 1, 0x20000001, srid, lng, lat).hex()


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
