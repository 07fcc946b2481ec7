"""The endpoint schemas: real-shaped vendor records → typed values with the quirks fixed; malformed → MappingError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from bronzeline.config.endpoints import ENDPOINTS
from bronzeline.sources.api.fields import record_hash
from bronzeline.sources.api.schema import SCHEMAS, MappingError, schema_for

FETCHED = datetime(2026, 3, 18, 12, 0, 0, 123456, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def mapped(endpoint: str, record: Any) -> dict[str, Any]:
    return schema_for(endpoint).map(record, FETCHED)


# Records shaped like the platform's documented examples (values as the platform sends them: numbers as strings
# where it sends strings).
DEVICE = {"imei": "868120145233604", "deviceName": "868120145233604", "mcType": "GT300L", "mcTypeUseScope": "personal",
          "sim": "415451", "expiration": "2037-04-01 23:59:59", "activationTime": "2017-04-01 11:02:20",
          "reMark": "test", "vehicleName": None, "vehicleIcon": "bus", "vehicleNumber": "粤B3604",
          "vehicleModels": None, "carFrame": "2235", "driverName": "driver", "driverPhone": "13825036579",
          "enabledFlag": 1, "engineNumber": "8565674", "deviceGroupId": "b54ab3c430864e31a64e54de44c79a1d",
          "deviceGroup": "default group", "account": "jimitest", "customerName": "Jimi Test", "iccid": "89860840",
          "imsi": "4600", "importTime": "2017-04-01 11:02:20", "licensePlatNo": "8565674", "VIN": "V123",
          "vehicleBrand": "Isuzu", "fuel_100km": "9", "status": "8565674", "currentMileage": "102.5"}
LIVE = {"imei": "860121060369660", "deviceName": "VL802-69660", "mcType": "VL802", "icon": "other", "status": "1",
        "posType": "GPS", "lat": 22.576562, "lng": 113.943084, "hbTime": "2026-03-26 11:25:38", "accStatus": "1",
        "gpsSignal": "4", "powerValue": None, "batteryPowerVal": "0.06", "speed": "0", "gpsNum": "15",
        "gpsTime": "2026-03-18 10:20:37", "direction": "100.12", "activationFlag": "1", "expireFlag": "1",
        "electQuantity": "", "locDesc": None, "distance": "-1", "temperature": None, "trackerOil": "0.00L",
        "currentMileage": "0.6481649691599485", "account": "FAETEST", "customerName": "FAETEST",
        "iccid": "898608401024C0669758", "confidence": None}
POINT = {"imei": "860121060369660", "lat": 22.576607, "lng": 113.943084, "gpsTime": "2026-03-18 09:40:46",
         "direction": 0, "gpsSpeed": 0.0, "posType": 1, "satellite": 0, "ignition": "ON", "accStatus": "ON",
         "gpsMode": 1, "confidence": None}
ALARM = {"deviceName": "JC450-01739", "imei": "869247060001739", "model": "JC450", "account": "acme",
         "alertTypeId": "6", "alarmTypeName": "Overspeed alarm", "alertTime": "2026-03-18 09:40:46",
         "positioningTime": "2026-03-18 09:40:40", "lat": "22.576607", "lng": "113.943084", "speed": "92",
         "geoid": ""}
TRIP = {"imei": "869247060001739", "startTime": "2017-04-26 00:00:58", "endTime": "2017-04-26 00:03:58",
        "startLat": 22.577144898887813, "startLng": 113.91674845964586, "endLat": 22.677144898887813,
        "endLng": 113.92674845964586, "runTimeSecond": 2130, "elapsed": 2130, "distance": 25000, "avgSpeed": 90}
PARKING = {"imei": "869247060001739", "startTime": "2022-12-10T01:05:33.000Z", "endTime": "2022-12-10T04:17:48.000Z",
           "durSecond": "11535", "lng": 113.943093, "lat": 22.576748, "addr": "Shigu Road", "deviceName":
           "JC450Pro-01739", "mcType": "JC450Pro", "acc": "off", "stopSecond": "11535"}
PUSHGPS = {"deviceImei": "869247060001739", "gpsTime": "2026-03-18 09:40:46", "gateTime": "2026-03-18 09:40:48",
           "lat": 22.576607, "lng": 113.943084, "gpsSpeed": 37, "direction": 271, "satelliteNum": 11, "acc": 1,
           "gpsMode": 0, "postType": 1, "altitude": 35, "distance": 123456789, "status": 4294967295}
PUSHALARM = {"imei": "869247060001739", "type": "DEVICE", "msgClass": 0, "gateTime": "2026-03-18 09:40:48",
             "msg": {"alertType": "1", "alarmTime": "2026-03-18 09:40:46", "lat": 22.576607, "lng": 113.943084,
                     "gpsSpeed": 0, "alertValue": "", "fenceId": None}}
PUSHEVENT = {"deviceImei": "869247060001739", "type": "LOGIN", "gateTime": "2026-03-18 09:40:48",
             "timezone": "GMT+08:00"}
PUSHHB = {"deviceImei": "869247060001739", "gateTime": "2026-03-18 09:40:48", "powerLevel": 6, "gsmSign": 4,
          "acc": 0, "oilEle": 0, "gpsPos": 1, "remoteLock": 0, "powerStatus": 1, "fortify": 0}
PUSHLBS = {"deviceImei": "869247060001739", "gateTime": "2026-03-18 09:40:48", "postType": "LBS",
           "lbsJson": "{\"mcc\":724,\"mnc\":10,\"cellList\":\"1,2,-70;3,4,-80\"}"}
OBD = {"deviceImei": "869247060001739", "gateTime": "2026-03-18 09:40:48", "rpm": 2100, "coolant": "88"}
PLATFORM_ALARM = {"imei": "869247060001739", "deviceName": "JC450-01739", "alarmType": "ACC_ON",
                  "alarmName": "ACC on", "lat": "22.576607", "lng": "113.943084", "alarmTime": "2026-03-18 09:40:46"}
PLATFORM_PUSH = {"msgType": "jimi.open.instruction.raw.receive",
                 "data": json.dumps({"imei": "869247060001739", "deviceName": "JC450", "raw_data": "7878"})}

SAMPLES: dict[str, dict[str, Any]] = {
    "devices": DEVICE, "device_detail": DEVICE, "live_positions": LIVE, "track": POINT, "alarms": ALARM,
    "trips": TRIP, "parking": PARKING, "pushgps": PUSHGPS, "pushalarm": PUSHALARM, "pushevent": PUSHEVENT,
    "pushhb": PUSHHB, "pushlbs": PUSHLBS, "pushobd": OBD, "pushtripreport": OBD, "pushoil": OBD, "pushtem": OBD,
    "platform_alarm": PLATFORM_ALARM, "platform_push": PLATFORM_PUSH,
}


# -- the contract with the config's endpoints

@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_every_endpoint_has_a_schema_with_its_key_and_watermark(endpoint: str) -> None:
    shape = ENDPOINTS[endpoint]
    schema = schema_for(endpoint)
    columns = {c.name: c for c in schema.columns()}
    assert schema.name == endpoint
    for name in (*shape.key, *([shape.watermark] if shape.watermark else [])):
        assert name in columns, f"{endpoint}: {name} is not a column"
    assert all(c.type == c.source_type for c in columns.values())
    point = schema.point()
    if point is not None:
        assert set(point) <= set(columns)
        assert all(columns[c].type == "numeric" for c in point)
    if shape.connection_type == "tracksolid_push":
        assert columns["received_at"].type == "timestamptz"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_key_and_watermark_are_never_null_for_a_valid_record(endpoint: str) -> None:
    shape = ENDPOINTS[endpoint]
    row = mapped(endpoint, SAMPLES[endpoint])
    assert list(row) == [c.name for c in schema_for(endpoint).columns()]
    for name in (*shape.key, *([shape.watermark] if shape.watermark else [])):
        assert row[name] is not None, f"{endpoint}: {name} is NULL"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_record_without_its_key_fields_is_refused(endpoint: str) -> None:
    shape = ENDPOINTS[endpoint]
    if shape.key == ("record_hash",):
        return  # any JSON object has a hash
    with pytest.raises(MappingError, match="is missing"):
        mapped(endpoint, {"unrelated": 1})


def test_only_config_endpoints_have_schemas() -> None:
    schema_for("devices")
    assert set(SCHEMAS) == set(ENDPOINTS)


# -- per endpoint

def test_devices_merge_list_and_detail_fields() -> None:
    row = mapped("devices", DEVICE)
    assert row["imei"] == "868120145233604"
    assert row["vehicle_number"] == "粤B3604"
    assert row["vehicle_name"] is None
    assert (row["driver_name"], row["driver_phone"]) == ("driver", "13825036579")
    assert (row["sim"], row["iccid"], row["mc_type"], row["device_group"]) == ("415451", "89860840", "GT300L",
                                                                               "default group")
    assert row["activation_time"] == utc("2017-04-01 11:02:20")
    assert row["expiration"] == utc("2037-04-01 23:59:59")
    assert row["enabled_flag"] == 1
    assert row["current_mileage_km"] == Decimal("102.5")
    assert row["fuel_100km"] == Decimal("9")
    assert row["vin"] == "V123"  # the doc's example spells it VIN
    assert row["status"] == "8565674"  # the doc's own example: not a flag, so kept as text
    assert mapped("devices", {"imei": "1"})["vehicle_number"] is None  # list fields only: the rest NULL


def test_live_positions() -> None:
    row = mapped("live_positions", LIVE)
    assert row["lat"] == Decimal("22.576562") and row["lng"] == Decimal("113.943084")
    assert row["gps_time"] == utc("2026-03-18 10:20:37") and row["hb_time"] == utc("2026-03-26 11:25:38")
    assert (row["status"], row["acc_status"], row["expire_flag"]) == (1, 1, 1)
    assert row["speed"] == Decimal("0") and row["direction"] == Decimal("100.12")
    assert row["elect_quantity"] is None  # "" is the platform's empty
    assert row["tracker_oil"] == "0.00L"
    assert (row["gps_signal"], row["gps_num"]) == (4, 15)
    assert row["current_mileage"] == Decimal("0.6481649691599485")
    assert row["distance"] == Decimal("-1")
    assert schema_for("live_positions").point() == ("lng", "lat")


def test_track_points() -> None:
    row = mapped("track", POINT)
    assert row["gps_time"] == utc("2026-03-18 09:40:46")
    assert (row["ignition"], row["acc_status"]) == (1, 1)  # "ON" here, "1" in other methods
    assert row["gps_speed"] == Decimal("0.0") and row["direction"] == Decimal("0")
    assert row["pos_type"] == "1"
    assert row["gps_mode"] == 1
    assert mapped("track", {**POINT, "ignition": "OFF", "accStatus": "0"})["ignition"] == 0


def test_alarms_fix_the_field_names() -> None:
    row = mapped("alarms", ALARM)
    assert (row["alarm_type"], row["alarm_name"], row["alarm_time"]) == ("6", "Overspeed alarm",
                                                                         utc("2026-03-18 09:40:46"))
    assert row["positioning_time"] == utc("2026-03-18 09:40:40")
    assert row["speed"] == Decimal("92") and row["lat"] == Decimal("22.576607")
    assert row["geoid"] is None
    # the doc's table spells the name alertTypeName
    documented = {k: v for k, v in ALARM.items() if k != "alarmTypeName"} | {"alertTypeName": "SOS"}
    assert mapped("alarms", documented)["alarm_name"] == "SOS"
    # platform alarms use a keyword, and the type may come as a number
    assert mapped("alarms", {**ALARM, "alertTypeId": "ACC_ON"})["alarm_type"] == "ACC_ON"
    assert mapped("alarms", {**ALARM, "alertTypeId": 6})["alarm_type"] == "6"


def test_trips_distance_metres_to_km_exactly() -> None:
    row = mapped("trips", TRIP)
    assert row["distance_m"] == Decimal("25000")
    assert row["distance_km"] == Decimal("25") and isinstance(row["distance_km"], Decimal)
    assert row["run_time_s"] == 2130
    assert row["start_lat"] == Decimal("22.577144898887813")  # the vendor's digits, not a float's
    for metres, km in (("12345.678", "12.345678"), (1, "0.001"), ("0.1", "0.0001"), (0.3, "0.0003"),
                       ("999999999999.999", "999999999.999999")):
        got = mapped("trips", {**TRIP, "distance": metres})["distance_km"]
        assert got == Decimal(km) and str(got) == str(Decimal(km)), (metres, got)
    assert schema_for("trips").point() == ("start_lng", "start_lat")


def test_trips_accept_either_run_time_name() -> None:
    without = {k: v for k, v in TRIP.items() if k != "runTimeSecond"}
    assert mapped("trips", without)["run_time_s"] == 2130  # the doc's example says elapsed
    assert mapped("trips", {**without, "elapsed": None, "runTimeSecond": "61"})["run_time_s"] == 61
    assert mapped("trips", {**TRIP, "runTimeSecond": None, "elapsed": None})["run_time_s"] is None


def test_parking_iso_times_and_string_durations() -> None:
    row = mapped("parking", PARKING)
    assert row["start_time"] == utc("2022-12-10 01:05:33") and row["end_time"] == utc("2022-12-10 04:17:48")
    assert row["duration_s"] == 11535 and isinstance(row["duration_s"], int)
    assert row["stop_s"] == 11535
    assert row["acc"] == "off"


def test_imei_is_text_without_losing_digits() -> None:
    assert mapped("track", {**POINT, "imei": 869247060001739})["imei"] == "869247060001739"
    assert mapped("track", {**POINT, "imei": 869247060001739.0})["imei"] == "869247060001739"
    assert mapped("track", {**POINT, "imei": Decimal("869247060001739")})["imei"] == "869247060001739"
    assert mapped("track", {**POINT, "imei": " 0869247060001739 "})["imei"] == "0869247060001739"
    with pytest.raises(MappingError, match="imei"):
        mapped("track", {**POINT, "imei": 8.692470600017391e20})
    with pytest.raises(MappingError, match="imei"):
        mapped("track", {**POINT, "imei": True})


def test_numbers_as_strings_and_as_numbers_agree() -> None:
    as_text = mapped("pushgps", {**PUSHGPS, "lat": "22.576607", "gpsSpeed": "37", "satelliteNum": "11", "acc": "1"})
    as_numbers = mapped("pushgps", PUSHGPS)
    assert as_text == as_numbers
    assert mapped("pushgps", {**PUSHGPS, "satelliteNum": 11.0})["satellite_num"] == 11


# -- times

@pytest.mark.parametrize(("sent", "expected"), [
    ("2026-03-18 09:40:46", "2026-03-18 09:40:46"),
    ("2026-03-18T09:40:46Z", "2026-03-18 09:40:46"),
    ("2026-03-18T09:40:46.250Z", "2026-03-18 09:40:46.250"),
    ("2026-03-18 17:40:46+08:00", "2026-03-18 09:40:46"),
    ("2026-3-8 9:40:46", "2026-03-08 09:40:46"),
    (" 2026-03-18 09:40:46 ", "2026-03-18 09:40:46"),
    (1773826846, "2026-03-18 09:40:46"),  # Unix seconds
    (1773826846000, "2026-03-18 09:40:46"),  # Unix milliseconds
])
def test_times_are_utc(sent: Any, expected: str) -> None:
    got = mapped("track", {**POINT, "gpsTime": sent})["gps_time"]
    assert got == utc(expected)
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("sent", ["not a time", "2026-13-01 00:00:00", "2026-02-30 10:00:00", "18/03/2026 09:40",
                                  "2026-03-18 25:00:00", [2026], {"t": 1}])
def test_a_bad_watermark_time_is_refused_naming_the_field(sent: Any) -> None:
    with pytest.raises(MappingError, match=r"^gpsTime .* time"):
        mapped("track", {**POINT, "gpsTime": sent})


def test_the_message_names_field_and_value() -> None:
    with pytest.raises(MappingError) as caught:
        mapped("track", {**POINT, "gpsTime": "not a time"})
    assert str(caught.value) == "gpsTime 'not a time' is not a yyyy-MM-dd HH:mm:ss time"


def test_received_at_is_fetched_at() -> None:
    eastern = FETCHED.astimezone(timezone(timedelta(hours=3)))
    row = schema_for("pushgps").map(PUSHGPS, eastern)
    assert row["received_at"] == FETCHED and row["received_at"].tzinfo == UTC


# -- values PostgreSQL would refuse

@pytest.mark.parametrize(("endpoint", "field", "value", "message"), [
    ("track", "lat", json.loads("1e400"), "lat"),  # inf
    ("track", "lat", "1e400", "lat"),
    ("track", "lat", "91", "lat '91' is out of range"),
    ("track", "lng", -180.5, "lng"),
    ("track", "lat", float("nan"), "lat"),
    ("track", "gpsSpeed", "fast", "gpsSpeed 'fast' is not a number"),
    ("track", "gpsSpeed", "1e20", "gpsSpeed"),
    ("track", "gpsSpeed", "1e-40", "gpsSpeed"),
    ("track", "gpsSpeed", True, "gpsSpeed"),
    ("track", "gpsSpeed", {"v": 1}, "gpsSpeed"),
    ("track", "satellite", 40000, "smallint"),
    ("track", "satellite", "3.5", "whole number"),
    ("track", "ignition", "MAYBE", "ignition"),
    ("trips", "runTimeSecond", 2**31, "integer"),
    ("parking", "durSecond", "11535s", "durSecond"),
    ("pushgps", "status", 2**63, "bigint"),
    ("devices", "vehicleNumber", "KBX\x00123", "NUL"),
    ("devices", "driverName", "\ud800", "unicode"),
    ("pushlbs", "lbsJson", "{not json", "lbsJson is not JSON"),
    ("pushlbs", "lbsJson", {"cell": "a\x00b"}, "NUL"),
])
def test_values_that_would_not_fit_their_column_are_refused(endpoint: str, field: str, value: Any,
                                                             message: str) -> None:
    with pytest.raises(MappingError, match=message):
        mapped(endpoint, {**SAMPLES[endpoint], field: value})


@pytest.mark.parametrize("record", [None, "text", 42, [1, 2], ["imei"]])
def test_a_record_that_is_not_an_object_is_refused(record: Any) -> None:
    for endpoint in ("track", "pushobd", "platform_push"):
        with pytest.raises(MappingError, match="JSON object"):
            mapped(endpoint, record)


def test_boundary_values_are_kept() -> None:
    row = mapped("track", {**POINT, "lat": "-90", "lng": "180", "satellite": 32767, "gpsSpeed": "-1"})
    assert (row["lat"], row["lng"], row["satellite"], row["gps_speed"]) == (Decimal(-90), Decimal(180), 32767,
                                                                             Decimal(-1))


def test_empty_values_are_null_not_errors() -> None:
    row = mapped("live_positions", {**LIVE, "speed": "", "gpsNum": " ", "lat": None, "hbTime": ""})
    assert (row["speed"], row["gps_num"], row["lat"], row["hb_time"]) == (None, None, None, None)


# -- pushes

def test_pushgps() -> None:
    row = mapped("pushgps", PUSHGPS)
    assert row["imei"] == "869247060001739"  # deviceImei
    assert (row["gps_time"], row["gate_time"]) == (utc("2026-03-18 09:40:46"), utc("2026-03-18 09:40:48"))
    assert (row["gps_speed"], row["direction"], row["satellite_num"], row["acc"]) == (37, 271, 11, 1)
    assert (row["gps_mode"], row["post_type"], row["altitude"]) == (0, "1", Decimal(35))
    assert row["distance"] == Decimal(123456789) and row["status"] == 4294967295
    assert row["received_at"] == FETCHED


def test_pushalarm_reads_the_msg_object() -> None:
    row = mapped("pushalarm", PUSHALARM)
    assert (row["imei"], row["alarm_type"], row["alarm_time"]) == ("869247060001739", "1", utc("2026-03-18 09:40:46"))
    assert (row["type"], row["msg_class"], row["lat"]) == ("DEVICE", 0, Decimal("22.576607"))
    as_text = {**PUSHALARM, "msg": json.dumps({**PUSHALARM["msg"], "alertType": None, "alarmType": "2",
                                               "alarmName": "Power cut"})}
    row = mapped("pushalarm", as_text)
    assert (row["alarm_type"], row["alarm_name"]) == ("2", "Power cut")
    with pytest.raises(MappingError, match="alertType is missing"):
        mapped("pushalarm", {**PUSHALARM, "msg": {"alarmTime": "2026-03-18 09:40:46"}})
    with pytest.raises(MappingError, match="msg is not JSON"):
        mapped("pushalarm", {**PUSHALARM, "msg": "{oops"})


def test_pushevent_pushhb_pushlbs() -> None:
    event = mapped("pushevent", PUSHEVENT)
    assert (event["event_type"], event["gate_time"], event["timezone"]) == ("LOGIN", utc("2026-03-18 09:40:48"),
                                                                            "GMT+08:00")
    hb = mapped("pushhb", PUSHHB)
    assert (hb["power_level"], hb["gsm_sign"], hb["gps_pos"], hb["power_status"]) == (6, 4, 1, 1)
    lbs = mapped("pushlbs", PUSHLBS)
    assert lbs["lbs_json"] == {"mcc": 724, "mnc": 10, "cellList": "1,2,-70;3,4,-80"}
    assert mapped("pushlbs", {**PUSHLBS, "lbsJson": {"mcc": 1}})["lbs_json"] == {"mcc": 1}


def test_undocumented_pushes_are_kept_whole_and_keyed_by_hash() -> None:
    row = mapped("pushobd", OBD)
    assert row["payload"] == OBD
    assert row["imei"] == "869247060001739" and row["event_time"] == utc("2026-03-18 09:40:48")
    reordered = dict(reversed(list(OBD.items())))
    assert mapped("pushobd", reordered)["record_hash"] == row["record_hash"] == record_hash(OBD)
    assert len(row["record_hash"]) == 32
    assert mapped("pushobd", {**OBD, "rpm": 2101})["record_hash"] != row["record_hash"]
    bare = mapped("pushtem", {"t1": 21.5, "gateTime": "not a time", "imei": {"x": 1}})
    assert (bare["imei"], bare["event_time"]) == (None, None)
    assert mapped("pushoil", {"deviceImei": "1", "time": "2026-03-18T09:40:48Z"})["event_time"] == \
        utc("2026-03-18 09:40:48")


def test_record_hash_is_md5_of_sorted_compact_json() -> None:
    import hashlib

    item = {"b": 1, "a": "é", "c": [1, {"z": None, "y": 2.5}]}
    text = '{"a":"é","b":1,"c":[1,{"y":2.5,"z":null}]}'
    assert record_hash(item) == hashlib.md5(text.encode()).hexdigest()


def test_platform_alarm_from_the_data_object_or_the_whole_push() -> None:
    row = mapped("platform_alarm", PLATFORM_ALARM)
    assert (row["imei"], row["alarm_type"], row["alarm_name"]) == ("869247060001739", "ACC_ON", "ACC on")
    assert row["alarm_time"] == utc("2026-03-18 09:40:46") and row["lat"] == Decimal("22.576607")
    wrapped = {"msgType": "jimi.push.device.alarm", "data": json.dumps(PLATFORM_ALARM)}
    assert mapped("platform_alarm", wrapped) == row
    with pytest.raises(MappingError, match="data is not JSON"):
        mapped("platform_alarm", {"msgType": "jimi.push.device.alarm", "data": "{nope"})


def test_platform_push_keeps_any_message() -> None:
    row = mapped("platform_push", PLATFORM_PUSH)
    assert row["msg_type"] == "jimi.open.instruction.raw.receive"
    assert row["imei"] == "869247060001739"
    assert row["payload"] == {"imei": "869247060001739", "deviceName": "JC450", "raw_data": "7878"}
    assert row["record_hash"] == record_hash(PLATFORM_PUSH)


def test_the_user_docs_list_every_column() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    missing = [f"{e}.{c.name}" for e in sorted(ENDPOINTS) for c in schema_for(e).columns() if f"`{c.name}`" not in doc]
    assert not missing, f"docs/api.md does not name these columns: {missing}"
    assert all(f"`{e}`" in doc for e in ENDPOINTS)
