"""The typed bronze columns of pushed data, one schema per push endpoint.

IoT-hub pushes (`/pushgps`, `/pushalarm`, ...) post a `data_list` JSON array; each item is one record. The
open platform's own push posts `msgType` and `data` (one JSON object): `platform_alarm` takes the `data` of
`jimi.push.device.alarm` (the record may be that object, or `{"msgType": ..., "data": ...}`), and
`platform_push` any message as `{"msgType": ..., "data": ...}`.

Every push table has `received_at` (when the receiver spooled the push: the window of push tables is on it).
Items of `/pushobd`, `/pushtripreport`, `/pushoil` and `/pushtem` have no public field list: they are kept
whole in `payload` and keyed by `record_hash`, the md5 of the item's canonical JSON (sorted keys, compact),
so a push the platform repeats lands once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bronzeline.sources.api.fields import (
    Computed,
    Field,
    RecordSchema,
    bigint,
    check_json,
    decimal,
    flag,
    imei,
    integer,
    jsonb,
    latitude,
    longitude,
    missing,
    received_at,
    record_hash,
    smallint,
    text,
    timestamp,
)
from bronzeline.sources.api.schema import MappingError, register

TEXT, TIME, NUM, JSONB = "text", "timestamptz", "numeric", "jsonb"
RECEIVED = Computed("received_at", TIME, received_at)


def _imei(*names: str) -> Field:
    return Field("imei", TEXT, names, imei, required=True)


def _text(column: str, *names: str) -> Field:
    return Field(column, TEXT, names, text)


# -- /pushgps: one fix per item; gpsMode 1 marks a re-uploaded (late) fix.
PUSHGPS = register(RecordSchema("pushgps", [
    _imei("deviceImei", "imei"),
    Field("gps_time", TIME, ("gpsTime",), timestamp, required=True),
    Field("gate_time", TIME, ("gateTime",), timestamp),
    Field("lat", NUM, ("lat",), latitude),
    Field("lng", NUM, ("lng",), longitude),
    Field("gps_speed", NUM, ("gpsSpeed",), decimal),  # km/h
    Field("direction", NUM, ("direction",), decimal),
    Field("satellite_num", "smallint", ("satelliteNum",), smallint),
    Field("acc", "smallint", ("acc",), flag),
    Field("gps_mode", "smallint", ("gpsMode",), smallint),  # 0 real time, 1 re-uploaded
    _text("post_type", "postType"),  # 1 GPS, 2 LBS, 3 WiFi
    Field("altitude", NUM, ("altitude",), decimal),  # metres
    Field("distance", NUM, ("distance",), decimal),  # odometer, metres
    Field("status", "bigint", ("status",), bigint),  # a bit field
    Field("post_method", "smallint", ("postMethod",), smallint),
    Field("sos_status", "smallint", ("sosStatus",), flag),
    Field("door_status", "smallint", ("doorStatus",), flag),
    Field("temperature", NUM, ("temperature",), decimal),
    _text("driver_license", "driverLicense"),
    _text("driver_license_status", "driverLicenseStatus"),
    _text("transparent_data", "transparentData"),
    RECEIVED,
], point=("lng", "lat")))


def _alarm_item(record: dict[str, Any]) -> dict[str, Any]:
    """`msg` may come as JSON text; an alarm's fields live in it."""
    msg = record.get("msg")
    if isinstance(msg, str) and not missing(msg):
        try:
            msg = json.loads(msg)
        except ValueError:
            raise MappingError("msg is not JSON") from None
        record = {**record, "msg": msg}
    if not isinstance(record.get("msg"), dict):
        record = {**record, "msg": {}}
    return record


# -- /pushalarm: item {imei, type, msgClass, gateTime, msg: {alertType|alarmType, alarmTime, lat, lng, ...}}.
PUSHALARM = register(RecordSchema("pushalarm", [
    _imei("imei", "deviceImei"),
    Field("alarm_type", TEXT, ("msg.alertType", "msg.alarmType", "alertType", "alarmType"), text, required=True),
    Field("alarm_time", TIME, ("msg.alarmTime", "alarmTime", "msg.alertTime"), timestamp, required=True),
    _text("alarm_name", "msg.alarmName", "alarmName"),
    _text("type", "type"),  # DEVICE | ICCID | VIN
    Field("msg_class", "smallint", ("msgClass",), smallint),  # 0 JIMI protocol, 1 JT/T 808
    Field("gate_time", TIME, ("gateTime",), timestamp),
    Field("lat", NUM, ("msg.lat", "lat"), latitude),
    Field("lng", NUM, ("msg.lng", "lng"), longitude),
    Field("gps_speed", NUM, ("msg.gpsSpeed", "gpsSpeed"), decimal),
    _text("alert_value", "msg.alertValue"),
    _text("fence_id", "msg.fenceId"),
    _text("driver_id", "msg.driverId"),
    _text("remove_alarm_type", "msg.removeAlarmType", "removeAlarmType"),  # set when an alarm ends
    RECEIVED,
], point=("lng", "lat"), prepare=_alarm_item))

# -- /pushevent: device login and logout.
PUSHEVENT = register(RecordSchema("pushevent", [
    _imei("deviceImei", "imei"),
    Field("event_type", TEXT, ("type",), text, required=True),  # LOGIN | LOGOUT
    Field("gate_time", TIME, ("gateTime",), timestamp, required=True),
    _text("timezone", "timezone"),  # the device's, e.g. GMT+08:00 (gateTime is UTC)
    RECEIVED,
]))

# -- /pushhb: heartbeats.
PUSHHB = register(RecordSchema("pushhb", [
    _imei("deviceImei", "imei"),
    Field("gate_time", TIME, ("gateTime",), timestamp, required=True),
    Field("power_level", "integer", ("powerLevel",), integer),
    Field("gsm_sign", "integer", ("gsmSign",), integer),
    Field("acc", "smallint", ("acc",), flag),
    Field("oil_ele", "smallint", ("oilEle",), flag),
    Field("gps_pos", "smallint", ("gpsPos",), flag),
    Field("remote_lock", "smallint", ("remoteLock",), flag),
    Field("power_status", "smallint", ("powerStatus",), flag),
    Field("fortify", "smallint", ("fortify",), flag),
    RECEIVED,
]))

# -- /pushlbs: cell-tower fixes; lbsJson ({mcc, mnc, cellList}) arrives as JSON text.
PUSHLBS = register(RecordSchema("pushlbs", [
    _imei("deviceImei", "imei"),
    Field("gate_time", TIME, ("gateTime",), timestamp, required=True),
    Field("lbs_json", JSONB, ("lbsJson",), jsonb),
    _text("post_type", "postType"),  # LBS | WIFI
    RECEIVED,
]))


def _hash(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> str:
    return record_hash(record)


def _payload(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> dict[str, Any]:
    check_json("the item", record)
    return record


def _event_time(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> datetime | None:
    """The first of gateTime/gpsTime/time that is a time; NULL when none is (the fields are not documented)."""
    for name in ("gateTime", "gpsTime", "time"):
        try:
            found = timestamp(name, record.get(name))
        except MappingError:
            continue
        if found is not None:
            return found
    return None


def _loose_imei(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> str | None:
    for name in ("deviceImei", "imei"):
        try:
            found = imei(name, record.get(name))
        except MappingError:
            continue
        if found:
            return found
    return None


def _undocumented(name: str) -> RecordSchema:
    return RecordSchema(name, [
        Computed("record_hash", TEXT, _hash),
        Computed("imei", TEXT, _loose_imei),
        Computed("event_time", TIME, _event_time),
        Computed("payload", JSONB, _payload),
        RECEIVED,
    ])


PUSHOBD = register(_undocumented("pushobd"))
PUSHTRIPREPORT = register(_undocumented("pushtripreport"))
PUSHOIL = register(_undocumented("pushoil"))
PUSHTEM = register(_undocumented("pushtem"))


def _platform_data(record: dict[str, Any]) -> dict[str, Any]:
    """The `data` object of an open-platform push (sent as JSON text), or the record itself."""
    if "data" not in record or "msgType" not in record:
        return record
    data = record["data"]
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            raise MappingError("data is not JSON") from None
    if not isinstance(data, dict):
        raise MappingError("data is not a JSON object")
    return data


# -- the open platform's alarm push (msgType jimi.push.device.alarm): alarmType is the alertTypeId of polling.
PLATFORM_ALARM = register(RecordSchema("platform_alarm", [
    _imei("imei"),
    Field("alarm_type", TEXT, ("alarmType", "alertTypeId", "alertType"), text, required=True),
    Field("alarm_time", TIME, ("alarmTime", "alertTime"), timestamp, required=True),
    _text("alarm_name", "alarmName", "alarmTypeName", "alertTypeName"),
    _text("device_name", "deviceName"),
    Field("lat", NUM, ("lat",), latitude),
    Field("lng", NUM, ("lng",), longitude),
    RECEIVED,
], point=("lng", "lat"), prepare=_platform_data))


def _platform_payload(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> Any:
    payload = _platform_data(record) if "msgType" in record and "data" in record else record
    check_json("the push", payload)
    return payload


def _platform_imei(record: dict[str, Any], values: dict[str, Any], fetched_at: datetime) -> str | None:
    data = record.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            data = None
    return _loose_imei(data if isinstance(data, dict) else record, values, fetched_at)


# -- any open-platform push: {"msgType": ..., "data": ...} kept whole, keyed by its hash.
PLATFORM_PUSH = register(RecordSchema("platform_push", [
    Computed("record_hash", TEXT, _hash),
    Field("msg_type", TEXT, ("msgType",), text),
    Computed("imei", TEXT, _platform_imei),
    Computed("payload", JSONB, _platform_payload),
    RECEIVED,
]))
