"""A spooled push as batch lines: one `ApiRecord` per `data_list` item (the IoT-hub family) or per `data`
object (the open platform's own push, `/push`). A body that is not what the family promises becomes one line
whose record is the text as received and whose error says why: it lands in raw and is counted, never lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bronzeline.receive.segments import Entry
from bronzeline.sources.api.records import ApiRecord

PLATFORM_PATH = "/push"  # the open platform's own push (form fields msgType and data)
PLATFORM_ALARM = "jimi.push.device.alarm"
PLATFORM_ENDPOINTS = ("platform_alarm", "platform_push")


def platform_endpoint(msg_type: str | None) -> str:
    """Which table family a platform push belongs to: alarms apart, every other message type together."""
    return "platform_alarm" if msg_type == PLATFORM_ALARM else "platform_push"


def _parsed(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def problem(endpoint: str, form: dict[str, str]) -> str | None:
    """Why a push's body is malformed for its family (None when it is well formed). The receiver counts
    these on arrival; the batch lines carry the same reasons."""
    if endpoint in PLATFORM_ENDPOINTS:
        if "data" not in form:
            return "the push has no `data` field"
        return None if isinstance(_parsed(form["data"]), dict) else "`data` is not a JSON object"
    if "data_list" not in form:
        return "the push has no `data_list` field"
    items = _parsed(form["data_list"])
    if not isinstance(items, list):
        return "`data_list` is not a JSON array"
    bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    return f"item {bad[0]} of `data_list` is not a JSON object" if bad else None


def records_of(entry: Entry) -> Iterator[ApiRecord]:
    """The batch lines of one spooled push. The call names the push (`push_id`, `item`): the raw row's id,
    so a push streamed into two batches is kept once."""
    call: dict[str, Any] = {"path": entry.path, "push_id": entry.push_id, "remote": entry.remote}
    at = entry.received_at
    if entry.endpoint in PLATFORM_ENDPOINTS:
        msg_type = entry.form.get("msgType")
        data = _parsed(entry.form.get("data"))
        call = {**call, "item": 0, "msg_type": msg_type}
        if isinstance(data, dict):
            yield ApiRecord({"msgType": msg_type, "data": data}, call, at)
        else:
            yield ApiRecord(_as_text(entry.form, "data"), call, at, problem(entry.endpoint, entry.form))
        return
    items = _parsed(entry.form.get("data_list"))
    if not isinstance(items, list):
        yield ApiRecord(_as_text(entry.form, "data_list"), {**call, "item": 0}, at,
                        problem(entry.endpoint, entry.form))
        return
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield ApiRecord(item, {**call, "item": index}, at)
        else:
            yield ApiRecord(json.dumps(item, ensure_ascii=False), {**call, "item": index}, at,
                            f"item {index} of `data_list` is not a JSON object")


def _as_text(form: dict[str, str], field: str) -> str:
    """The field as received, or — when it is missing — every field that came (the token is never kept)."""
    if field in form:
        return form[field]
    return json.dumps(form, sort_keys=True, ensure_ascii=False)
