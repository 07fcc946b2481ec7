"""The API and push endpoints a table can name (`tables[].endpoint`), as far as the config needs them:
which connection type serves each, which modes it takes, and the key and watermark its bronze table has.
The typed columns and the field mapping live with the sources (sources/tracksolid/, sources/push/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ConnectionType = Literal["tracksolid", "tracksolid_push"]


@dataclass(frozen=True)
class EndpointShape:
    name: str
    connection_type: ConnectionType
    modes: tuple[str, ...]  # the first is the default
    key: tuple[str, ...]
    watermark: str | None  # incremental: the bronze column the window is on (device time, or receive time)


def _poll(name: str, modes: tuple[str, ...], key: tuple[str, ...], watermark: str | None) -> EndpointShape:
    return EndpointShape(name, "tracksolid", modes, key, watermark)


def _push(name: str, key: tuple[str, ...]) -> EndpointShape:
    # Pushes arrive in receive order, not device order: their window is on the time the receiver spooled them.
    return EndpointShape(name, "tracksolid_push", ("incremental",), key, "received_at")


ENDPOINTS: dict[str, EndpointShape] = {e.name: e for e in (
    _poll("devices", ("snapshot",), ("imei",), None),
    _poll("device_detail", ("snapshot",), ("imei",), None),
    _poll("live_positions", ("snapshot",), ("imei",), None),
    _poll("track", ("incremental",), ("imei", "gps_time"), "gps_time"),
    _poll("alarms", ("incremental",), ("imei", "alarm_type", "alarm_time"), "alarm_time"),
    _poll("trips", ("incremental",), ("imei", "start_time"), "start_time"),
    _poll("parking", ("incremental",), ("imei", "start_time"), "start_time"),
    _push("pushgps", ("imei", "gps_time")),
    _push("pushalarm", ("imei", "alarm_type", "alarm_time")),
    _push("pushevent", ("imei", "event_type", "gate_time")),
    _push("pushhb", ("imei", "gate_time")),
    _push("pushlbs", ("imei", "gate_time")),
    # Item fields not documented anywhere public: kept whole, keyed by a hash of the item.
    _push("pushobd", ("record_hash",)),
    _push("pushtripreport", ("record_hash",)),
    _push("pushoil", ("record_hash",)),
    _push("pushtem", ("record_hash",)),
    # The open platform's own push (form fields msgType and data): one table per message type family.
    _push("platform_alarm", ("imei", "alarm_type", "alarm_time")),
    _push("platform_push", ("record_hash",)),
)}


def endpoints_for(connection_type: str) -> list[str]:
    return [e.name for e in ENDPOINTS.values() if e.connection_type == connection_type]
