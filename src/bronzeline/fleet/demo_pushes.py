"""The push half of `bronzeline demo --api`: `bronzeline receive` as a subprocess on a free loopback port,
a burst of the platform's pushes fired at it with the fake's `push()` helper (every path the reference
config reads, a malformed body, an item without its time, a push sent twice), then SIGTERM (drain, flush).

The items follow the field lists public receivers show for `/pushgps`, `/pushalarm`, `/pushevent` and
`/pushlbs`; `/pushobd`, `/pushtripreport`, `/pushoil` and `/pushtem` have no public field list, so their
items here are invented, plausible shapes (bronze keeps them whole in `payload` anyway).
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bronzeline.errors import BronzelineError
from bronzeline.fleet.jimi_fake import FakeDevice, push

Say = Callable[[str], None]
Push = tuple[str, list[dict[str, Any]] | str]  # (path, data_list items or a raw data_list text)
START_SECONDS = 30.0
STOP_SECONDS = 60.0


@dataclass
class PushReport:
    sent: int = 0
    acknowledged: int = 0
    items: int = 0  # in the pushes sent (a malformed body counts as one)
    by_path: dict[str, int] = field(default_factory=dict)
    port: int = 0  # where the receiver listened
    exit_code: int | None = None  # the receiver's, after SIGTERM


class ReceiverFailed(BronzelineError):
    """The demo's receiver did not start, answer or stop as it should."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")  # the platform's UTC time strings


def burst(devices: list[FakeDevice], now: datetime, seed: int = 11) -> list[Push]:
    """The pushes the demo fires: a few of each kind for `devices`, around the platform's `now` (UTC)."""
    rng = random.Random(seed)
    pushes: list[Push] = []

    def at(seconds_ago: float) -> str:
        return _time(now - timedelta(seconds=seconds_ago))

    for round_ in range(3):  # fixes, 10-30 s apart, some re-uploaded late (gpsMode 1)
        items = []
        for dev in devices:
            lat, lng = dev.home
            ago = 90 - 30 * round_
            late = rng.random() < 0.15
            items.append({"deviceImei": dev.imei, "gpsTime": at(ago + (600 if late else 0)), "gateTime": at(ago - 1),
                          "lat": round(lat + rng.uniform(-0.02, 0.02), 6),
                          "lng": round(lng + rng.uniform(-0.02, 0.02), 6),
                          "gpsSpeed": round(rng.uniform(0, 70), 1), "direction": rng.randrange(360),
                          "satelliteNum": rng.randint(6, 14), "acc": 1, "gpsMode": int(late), "postType": "1",
                          "distance": rng.randint(10_000, 900_000)})
        pushes.append(("pushgps", items))
    alarms = []
    for dev in devices[:4]:
        lat, lng = dev.home
        alarms.append({"imei": dev.imei, "type": "DEVICE", "msgClass": 0, "gateTime": at(40),
                       "msg": json.dumps({"alertType": "6", "alarmName": "Overspeed alarm", "alarmTime": at(41),
                                          "lat": lat, "lng": lng, "gpsSpeed": 104.5})})
    pushes.append(("pushalarm", alarms))
    pushes.append(("pushevent", [{"deviceImei": d.imei, "type": ("LOGIN", "LOGOUT")[i % 2],
                                  "gateTime": at(300 - 60 * i), "timezone": "GMT+03:00"}
                                 for i, d in enumerate(devices[:4])]))
    pushes.append(("pushlbs", [{"deviceImei": d.imei, "gateTime": at(120), "postType": "LBS",
                                "lbsJson": json.dumps({"mcc": 639, "mnc": 2, "cellList": [
                                    {"lac": 1000 + i, "ci": 20_000 + i, "rssi": -70 - i}]})}
                               for i, d in enumerate(devices[:3])]))
    obd = [{"deviceImei": d.imei, "gateTime": at(60), "engineRpm": rng.randint(800, 3000),
            "coolantTempC": rng.randint(80, 95), "fuelLevelPct": round(rng.uniform(10, 95), 1)} for d in devices[:5]]
    pushes += [("pushobd", obd), ("pushobd", obd)]  # the platform repeats a push: it lands once
    pushes.append(("pushtripreport", [{"deviceImei": d.imei, "startTime": at(3000), "endTime": at(200),
                                       "mileage": rng.randint(2_000, 40_000), "maxSpeed": rng.randint(50, 110)}
                                      for d in devices[:3]]))
    pushes.append(("pushoil", [{"deviceImei": d.imei, "gateTime": at(90), "oilValue": f"{rng.uniform(5, 60):.1f}",
                                "unit": "L"} for d in devices[:3]]))
    pushes.append(("pushtem", [{"deviceImei": d.imei, "gateTime": at(30), "sensor": 1,
                                "temperature": f"{rng.uniform(2, 8):.1f}"} for d in devices[:3]]))
    # Malformed: a data_list that is not JSON (kept whole in raw), and a fix without its time.
    pushes.append(("pushgps", '[{"deviceImei": "8690000000'))
    pushes.append(("pushgps", [{"deviceImei": devices[0].imei, "lat": 0.0, "lng": 0.0}]))
    return pushes


def fire(url_base: str, pushes: list[Push], token: str) -> PushReport:
    report = PushReport()
    for path, items in pushes:
        status, _ = push(url_base, path, items, token)
        report.sent += 1
        report.acknowledged += status == 200
        count = 1 if isinstance(items, str) else len(items)
        report.items += count
        report.by_path[path] = report.by_path.get(path, 0) + count
    return report


def receive_burst(config_path: Path, env: Mapping[str, str], token: str, pushes: list[Push], say: Say) -> PushReport:
    """Start `bronzeline receive`, fire `pushes`, stop it with SIGTERM (it drains and loads what it holds).
    Its log lines are shown indented."""
    port = free_port()
    log = config_path.parent / "receive.log"
    say(f"$ bronzeline receive --port {port}   # a subprocess; pushes fired at it, then SIGTERM")
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "bronzeline", "-c", str(config_path), "receive",
                                 "--port", str(port)], env=dict(env), cwd=config_path.parent, stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        _wait_healthy(proc, port, log)
        report = fire(f"http://127.0.0.1:{port}", pushes, token)
        report.port = port
        say(f"  fired {report.sent} pushes ({report.items} items: "
            + ", ".join(f"{n} {p}" for p, n in report.by_path.items()) + f"); {report.acknowledged} acknowledged")
        proc.send_signal(signal.SIGTERM)
        report.exit_code = proc.wait(timeout=STOP_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        say(f"  | {line}")
    if report.exit_code != 0:
        raise ReceiverFailed(f"the demo's receiver exited {report.exit_code} after SIGTERM; see {log}")
    return report


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReceiverFailed(f"the demo's receiver exited {proc.returncode} at start; see {log}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
        finally:
            conn.close()
    raise ReceiverFailed(f"the demo's receiver did not answer /healthz in {START_SECONDS:g} s; see {log}")
