"""The typed bronze columns of the Tracksolid poll endpoints, with the platform's quirks fixed.

Column names are the snake_case of the vendor's field, except where a quirk is fixed: alarm rows'
`alertTypeId/alarmTypeName/alertTime` → `alarm_type/alarm_name/alarm_time`, trip `distance` (metres, as the
platform documents it) → `distance_m` and `distance_km`, `runTimeSecond` (or `elapsed`) → `run_time_s`,
parking `durSecond`/`stopSecond` → `duration_s`/`stop_s`, `currentMileage` (km) → `current_mileage_km`.
Every record is also kept whole in the table's raw twin; these columns are the documented fields.

Types: times → timestamptz (the platform's strings are UTC); coordinates, speeds, directions, distances →
numeric (the digits the vendor sent, nothing rounded); counts, durations, levels → smallint/integer; 0/1
flags → smallint (see fields.flag); codes whose form varies between methods (posType "GPS" vs 1) → text.

Track rows carry no IMEI (the method reads one device per call): the fetcher adds `imei` to each record."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bronzeline.sources.api.fields import (
    Computed,
    Field,
    RecordSchema,
    decimal,
    flag,
    imei,
    integer,
    latitude,
    longitude,
    smallint,
    text,
    timestamp,
)
from bronzeline.sources.api.schema import register

TEXT, TIME, NUM = "text", "timestamptz", "numeric"


def _imei() -> Field:
    return Field("imei", TEXT, ("imei",), imei, required=True)


def _text(column: str, *names: str) -> Field:
    return Field(column, TEXT, names, text)


# -- devices and device_detail: jimi.user.device.list merged with jimi.track.device.detail (the detail adds
# account, customer, SIM identity, VIN, status and mileage); one row per device.
_DEVICE = [
    _imei(),
    _text("device_name", "deviceName"),
    _text("mc_type", "mcType"),
    _text("mc_type_use_scope", "mcTypeUseScope"),
    _text("account", "account"),
    _text("customer_name", "customerName"),
    _text("sim", "sim"),
    _text("iccid", "iccid"),
    _text("imsi", "imsi"),
    Field("activation_time", TIME, ("activationTime",), timestamp),
    Field("expiration", TIME, ("expiration",), timestamp),
    # "account1,2019-01-01 account2,2019-02-02": one date per account, so text.
    _text("user_expiration", "user_expiration", "userExpiration"),
    Field("import_time", TIME, ("importTime",), timestamp),
    _text("re_mark", "reMark"),
    _text("vehicle_name", "vehicleName"),
    _text("vehicle_number", "vehicleNumber"),
    _text("license_plat_no", "licensePlatNo"),
    _text("vehicle_icon", "vehicleIcon"),
    _text("vehicle_models", "vehicleModels"),
    _text("vehicle_brand", "vehicleBrand"),
    _text("car_frame", "carFrame"),
    _text("vin", "vin", "VIN"),
    _text("engine_number", "engineNumber"),
    _text("driver_name", "driverName"),
    _text("driver_phone", "driverPhone"),
    Field("enabled_flag", "smallint", ("enabledFlag",), flag),
    # Documented as "0 disable / 1 enable", but the platform's own example sends "8565674": kept as text.
    _text("status", "status"),
    Field("fuel_100km", NUM, ("fuel_100km", "fuel100km"), decimal),
    Field("current_mileage_km", NUM, ("currentMileage",), decimal),
    _text("device_group_id", "deviceGroupId"),
    _text("device_group", "deviceGroup"),
]

DEVICES = register(RecordSchema("devices", _DEVICE))
DEVICE_DETAIL = register(RecordSchema("device_detail", _DEVICE))

# -- live_positions: jimi.user.device.location.list / jimi.device.location.get, one row per device.
LIVE_POSITIONS = register(RecordSchema("live_positions", [
    _imei(),
    _text("device_name", "deviceName"),
    _text("mc_type", "mcType"),
    _text("icon", "icon"),
    Field("status", "smallint", ("status",), flag),  # "1" online, "0" offline
    Field("lat", NUM, ("lat",), latitude),  # 0 when the device expired
    Field("lng", NUM, ("lng",), longitude),
    _text("pos_type", "posType"),  # GPS / LBS / WIFI / BEACON
    _text("loc_desc", "locDesc"),
    Field("gps_time", TIME, ("gpsTime",), timestamp),
    Field("hb_time", TIME, ("hbTime",), timestamp),
    Field("speed", NUM, ("speed",), decimal),  # km/h
    Field("direction", NUM, ("direction",), decimal),  # 0-360, -1 unknown, decimals allowed ("100.12")
    Field("acc_status", "smallint", ("accStatus",), flag),
    Field("expire_flag", "smallint", ("expireFlag",), flag),
    Field("activation_flag", "smallint", ("activationFlag",), flag),
    Field("elect_quantity", NUM, ("electQuantity",), decimal),  # battery %
    # Voltages, fuel and temperature come with units or several sensors in one string ("0.00L"): text.
    _text("power_value", "powerValue"),
    _text("battery_power_val", "batteryPowerVal"),
    _text("tracker_oil", "trackerOil"),
    _text("temperature", "temperature"),
    Field("distance", NUM, ("distance",), decimal),  # unit not documented ("-1" seen)
    Field("gps_signal", "smallint", ("gpsSignal",), smallint),  # 0-4
    Field("gps_num", "smallint", ("gpsNum",), smallint),  # satellites
    Field("confidence", "smallint", ("confidence",), smallint),  # 1 worst - 3 best
    Field("current_mileage", NUM, ("currentMileage",), decimal),  # unit not documented for this method
    _text("account", "account"),
    _text("customer_name", "customerName"),
    _text("iccid", "iccid"),
], point=("lng", "lat")))

# -- track: jimi.device.track.list, one row per point; gpsMode 1 marks a re-uploaded (late) fix.
TRACK = register(RecordSchema("track", [
    _imei(),
    Field("gps_time", TIME, ("gpsTime",), timestamp, required=True),
    Field("lat", NUM, ("lat",), latitude),
    Field("lng", NUM, ("lng",), longitude),
    Field("gps_speed", NUM, ("gpsSpeed",), decimal),
    Field("direction", NUM, ("direction",), decimal),
    _text("pos_type", "posType"),  # 1 GPS, 2 LBS, 3 WIFI
    Field("satellite", "smallint", ("satellite",), smallint),
    Field("ignition", "smallint", ("ignition",), flag),  # "ON"/"OFF" → 1/0
    Field("acc_status", "smallint", ("accStatus",), flag),  # "ON"/"OFF" here, "1"/"0" elsewhere → 1/0
    Field("confidence", "smallint", ("confidence",), smallint),
    Field("gps_mode", "smallint", ("gpsMode",), smallint),  # 0 real time, 1 re-uploaded
], point=("lng", "lat")))

# -- alarms: jimi.device.alarm.list. The doc's table says alertTypeName, its example and real clients
# alarmTypeName: both are read. alertTypeId is a numeric string for device alarms and a keyword (ACC_ON,
# overSpeed, ...) for platform alarms: text.
ALARMS = register(RecordSchema("alarms", [
    _imei(),
    Field("alarm_type", TEXT, ("alertTypeId", "alarmType", "alertType"), text, required=True),
    Field("alarm_time", TIME, ("alertTime", "alarmTime"), timestamp, required=True),
    _text("alarm_name", "alarmTypeName", "alertTypeName", "alarmName"),
    _text("device_name", "deviceName"),
    _text("model", "model"),
    _text("account", "account"),
    Field("positioning_time", TIME, ("positioningTime",), timestamp),
    Field("lat", NUM, ("lat",), latitude),
    Field("lng", NUM, ("lng",), longitude),
    Field("speed", NUM, ("speed",), decimal),
    _text("geoid", "geoid"),  # the fence of in/out alarms
], point=("lng", "lat")))


def _km(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> Decimal | None:
    """metres / 1000, exactly (a decimal shift, no rounding)."""
    metres: Decimal | None = values["distance_m"]
    return None if metres is None else metres.scaleb(-3)


# -- trips: jimi.device.track.mileage, one row per trip. The platform documents `distance` in metres.
TRIPS = register(RecordSchema("trips", [
    _imei(),
    Field("start_time", TIME, ("startTime",), timestamp, required=True),
    Field("end_time", TIME, ("endTime",), timestamp),
    Field("start_lat", NUM, ("startLat",), latitude),
    Field("start_lng", NUM, ("startLng",), longitude),
    Field("end_lat", NUM, ("endLat",), latitude),
    Field("end_lng", NUM, ("endLng",), longitude),
    Field("run_time_s", "integer", ("runTimeSecond", "elapsed"), integer),
    Field("distance_m", NUM, ("distance",), decimal),
    Computed("distance_km", NUM, _km),
    Field("avg_speed", NUM, ("avgSpeed",), decimal),
], point=("start_lng", "start_lat")))

# -- parking: jimi.open.platform.report.parking (rows under data.rows), parking (acc off) or idling (acc on).
# Its times are ISO with Z ("2022-12-10T01:05:33.000Z"), its durations strings of seconds.
PARKING = register(RecordSchema("parking", [
    _imei(),
    Field("start_time", TIME, ("startTime",), timestamp, required=True),
    Field("end_time", TIME, ("endTime",), timestamp),
    Field("duration_s", "integer", ("durSecond",), integer),
    Field("stop_s", "integer", ("stopSecond",), integer),
    Field("lat", NUM, ("lat",), latitude),
    Field("lng", NUM, ("lng",), longitude),
    _text("addr", "addr"),
    _text("device_name", "deviceName"),
    _text("mc_type", "mcType"),
    _text("acc", "acc"),  # "on"/"off" as sent
], point=("lng", "lat")))
