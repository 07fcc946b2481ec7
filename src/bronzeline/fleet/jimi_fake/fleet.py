"""The fake platform's settings and its fleet: accounts, devices and the device registry records
(`jimi.user.device.list`, `jimi.track.device.detail`), all derived from a seed."""

from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bronzeline.fleet.model import CITIES, DEVICE_FAMILIES, City, make_imei, make_plate, random_point

FLEET_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # registry dates are anchored here, so they never move

_KINDS = ("Pickup", "Van", "Probox", "Hilux", "Canter", "Motorbike")
_DRIVERS = ("John Kamau", "Peter Otieno", "Mary Wanjiku", "James Mwangi", "Grace Achieng", "David Kiptoo",
            "Faith Mutua", "Joseph Omondi", "Esther Chebet", "Samuel Kariuki", "Ruth Nyambura", "Isaac Okello")
_BRANDS = ("Toyota", "Isuzu", "Nissan", "Mitsubishi", "Honda")


def password_md5(password: str) -> str:
    """What `user_pwd_md5` carries: the lower-case MD5 of the password."""
    return hashlib.md5(password.encode()).hexdigest()


@dataclass
class FakeSettings:
    """Everything about the fake that tests may set; fields marked *live* may be changed while it runs."""

    app_key: str = "fake-app-key"
    app_secret: str = "fake-app-secret"
    accounts: dict[str, str] = field(default_factory=lambda: {"fireside": password_md5("fireside")})
    # Accounts whose devices exist (the login account and its sub-accounts); any logged-in account reads them.
    targets: tuple[str, ...] = ("fireside",)
    devices_per_account: int = 10
    reporting_share: float = 1 / 3  # devices that report at all; the rest sit still since long ago
    seed: int = 7
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    max_imeis: int = 50  # the platform documents 100; more gets 1001
    history_days: int = 90  # track and alarm windows must start within this many days
    check_timestamp: bool = True  # the ±10 minute check on `timestamp` (against the machine's clock)
    # -- tokens (live)
    token_ttl_seconds: float | None = None  # overrides the `expires_in` asked for (seconds, real time)
    fail_refresh: bool = False  # jimi.oauth.token.refresh answers 1004: the client must log in again
    # -- rate limiting (live): code 1006 "too frequent requests", on every method including token.get
    rate_limit_every: int | None = None  # of every N calls, the last `rate_limit_burst` are refused
    rate_limit_burst: int = 1
    rate_limit_per_second: float | None = None  # a budget refilled continuously (burst = one second's worth)
    # -- data quirks (live)
    late_share: float = 0.2  # track points re-transmitted (gpsMode 1): visible only some minutes later
    late_delay_s: tuple[int, int] = (120, 1200)
    malformed_share: float = 0.0  # track points served broken (gpsTime "not a time", or no lat)
    alarm_max_rows: int = 1000  # one alarm query serves at most this many rows (later pages come back empty)
    ignore_paging: bool = False  # every page request gets all rows (a platform that does not page)
    mileage_unit: str = "m"  # "km" reproduces the one production report of km in track.mileage

    @property
    def login(self) -> str:
        return next(iter(self.accounts))


@dataclass(frozen=True)
class FakeDevice:
    imei: str
    target: str
    index: int  # position in its account's list
    model: str
    city: City
    plate: str
    vehicle_name: str
    driver_name: str
    driver_phone: str
    sim: str
    iccid: str
    imsi: str
    vin: str
    brand: str
    fuel_100km: str
    odometer_km: float
    activation: datetime
    reporting: bool
    home: tuple[float, float]  # (lat, lng)
    last_seen: datetime  # non-reporting devices: their last (and only) fix

    @property
    def device_name(self) -> str:
        return f"{self.model}-{self.imei[-5:]}"


def make_devices(settings: FakeSettings) -> list[FakeDevice]:
    """Every account's devices, in account order; IMEIs unique across accounts."""
    seen: set[str] = set()
    devices: list[FakeDevice] = []
    for target in settings.targets:
        rng = random.Random(f"{settings.seed}|fleet|{target}")
        count = settings.devices_per_account
        reporting = set(rng.sample(range(count), max(1, round(count * settings.reporting_share)))) if count else set()
        for i in range(count):
            prefix, model, _ = rng.choices(DEVICE_FAMILIES, [f[2] for f in DEVICE_FAMILIES])[0]
            imei = make_imei(rng, prefix)
            while imei in seen:
                imei = make_imei(rng, prefix)
            seen.add(imei)
            city = rng.choices(CITIES, [c.share for c in CITIES])[0]
            activation = FLEET_EPOCH - timedelta(days=rng.uniform(20, 900))
            devices.append(FakeDevice(
                imei=imei, target=target, index=i, model=model, city=city, plate=make_plate(rng, city),
                vehicle_name=f"{rng.choice(_KINDS)} {city.code}-{i + 1:03d}",
                # most units have no driver assigned on the platform: the vendor sends ""
                driver_name=rng.choice(_DRIVERS) if rng.random() < 0.35 else "",
                driver_phone=f"+2547{rng.randint(10_000_000, 99_999_999)}" if rng.random() < 0.2 else "",
                sim=f"07{rng.randint(10_000_000, 99_999_999)}",
                iccid=f"8925402{rng.randint(10**12, 10**13 - 1)}", imsi=f"63902{rng.randint(10**9, 10**10 - 1)}",
                vin="".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17)),
                brand=rng.choice(_BRANDS), fuel_100km=f"{rng.uniform(6.5, 14.5):.1f}",
                odometer_km=round(rng.uniform(5_000, 240_000), 1), activation=activation,
                reporting=i in reporting,
                home=random_point(rng, city.lat, city.lng, city.radius_m * 0.5),
                last_seen=FLEET_EPOCH + timedelta(seconds=rng.randint(0, 200 * 86400)),
            ))
    return devices


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def list_record(dev: FakeDevice) -> dict[str, Any]:
    """A `jimi.user.device.list` row."""
    return {
        "imei": dev.imei, "deviceName": dev.device_name, "mcType": dev.model, "mcTypeUseScope": "automobile",
        "sim": dev.sim, "expiration": _day(dev.activation + timedelta(days=3650)),
        "activationTime": _day(dev.activation), "reMark": "", "vehicleName": dev.vehicle_name,
        "vehicleIcon": "automobile", "vehicleNumber": dev.plate, "vehicleModels": dev.vehicle_name.split()[0],
        "carFrame": dev.vin, "driverName": dev.driver_name, "driverPhone": dev.driver_phone, "enabledFlag": 1,
        "engineNumber": "", "deviceGroupId": str(zlib.crc32(dev.target.encode()) % 100000),
        "deviceGroup": "Default group",
    }


def detail_record(dev: FakeDevice) -> dict[str, Any]:
    """A `jimi.track.device.detail` result: the list fields and the account's and SIM's."""
    return {
        **list_record(dev), "account": dev.target, "customerName": dev.target.title(),
        "user_expiration": _day(dev.activation + timedelta(days=3650)), "iccid": dev.iccid,
        "importTime": _day(dev.activation - timedelta(days=3)), "imsi": dev.imsi, "licensePlatNo": dev.plate,
        "vin": dev.vin, "vehicleBrand": dev.brand, "fuel_100km": dev.fuel_100km,
        "status": 1 if dev.reporting else 0, "currentMileage": f"{dev.odometer_km:.1f}",
    }
