"""Fire pushes at a receiver the way the platform does: form-encoded POSTs, the IoT hub's `token` +
`data_list` (a JSON array as a string) to `<base>/<path>`, or the open platform's `msgType` + `data`
(one JSON object as a string)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode


def _post(url: str, fields: dict[str, str], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=urlencode(fields).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:  # 401, 413…: the caller checks the status
        return int(exc.code), exc.read()


def push(url_base: str, path: str, items: list[Any] | str, token: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST `items` to `<url_base>/<path>` as the IoT hub does; a str is sent as `data_list` verbatim (to
    send a malformed body). Returns (HTTP status, body)."""
    data_list = items if isinstance(items, str) else json.dumps(items, separators=(",", ":"))
    return _post(f"{url_base.rstrip('/')}/{path.lstrip('/')}", {"token": token, "data_list": data_list}, timeout)


def push_platform(url: str, msg_type: str, data: dict[str, Any] | str, token: str | None = None,
                  timeout: float = 10.0) -> tuple[int, bytes]:
    """POST one open-platform push (`msgType`, `data`) to `url`; the vendor sends no token (receivers put
    one in the URL or a field): when given it goes in the `token` field."""
    fields = {"msgType": msg_type, "data": data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))}
    if token is not None:
        fields["token"] = token
    return _post(url, fields, timeout)
