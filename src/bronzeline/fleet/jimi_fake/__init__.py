"""A faithful local fake of the Jimi IoT / Tracksolid Pro open platform (signatures, tokens, rate limits,
the IMEI cap, late fixes, the vendor's record shapes) with ground truth for tests, and helpers that fire
pushes at a receiver. `python -m bronzeline.fleet.jimi_fake` serves one."""

from __future__ import annotations

from bronzeline.fleet.jimi_fake.fleet import FakeDevice, FakeSettings, password_md5
from bronzeline.fleet.jimi_fake.push import push, push_platform
from bronzeline.fleet.jimi_fake.server import CallLog, FakePlatform

__all__ = ["CallLog", "FakeDevice", "FakePlatform", "FakeSettings", "password_md5", "push", "push_platform"]
