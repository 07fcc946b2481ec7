"""The compiled road of the API load (sources/api/fast.py) gives exactly the bytes of the schema's own mapping
(sources/api/stage.py slow_row) — same text for every column, same error for every refused record — over the
fake platform's records and over values chosen to take every short road and fall off each one."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bronzeline.fleet.jimi_fake import FakePlatform, FakeSettings
from bronzeline.sources.api.fast import compile_row
from bronzeline.sources.api.schema import SCHEMAS, MappingError, schema_for
from bronzeline.sources.api.stage import slow_row

schema_for("track")  # registers every schema
FETCHED = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
ODD_VALUES: list[Any] = [
    None, "", "  ", "0", "1", "-1", "12.5", " 12.5 ", "1e3", "1E-40", "abc", "ON", "OFF", "On", "true", "false",
    0, 1, -1, 2**15, 2**31, 2**63, -(2**63), 10**16, 0.0, -0.0, 1.5, 90.0, 90.000001, -180.0, 1e-05, 1e300,
    float("nan"), float("inf"), True, False, "2026-12-01 08:30:00", "2026-02-30 08:30:00", "2026-12-01T08:30:00Z",
    "2026-12-01 08:30:00.250", "2026-12-01", 1764577800, 1764577800123, "a,b", 'quo"te', "line\nbreak",
    "nul\x00", "\ud800", "Nairobi – 東京", {"a": [1, 2]}, [1, "x"], "353549517158563", 353549517158563,
]


def outcome(row: Any, record: Any) -> tuple[str, str]:
    try:
        return "ok", row(record, FETCHED)
    except MappingError as exc:
        return "error", str(exc)


def fake_records() -> dict[str, list[Any]]:
    fake = FakePlatform(FakeSettings(devices_per_account=8, reporting_share=1.0, malformed_share=0.2))
    end = fake.now()
    start = end - timedelta(days=2)
    out = {e: fake.truth(e, start=start, end=end) for e in ("track", "alarms", "trips", "parking")}
    out["live_positions"] = fake.truth("live_positions")
    out["devices"] = out["device_detail"] = fake.truth("devices")
    return out


@pytest.mark.parametrize("endpoint", sorted(SCHEMAS))
def test_the_compiled_row_equals_the_schema_mapping(endpoint: str) -> None:
    schema = SCHEMAS[endpoint]
    fast, slow = compile_row(schema), slow_row(schema)
    assert fast is not None
    records: list[Any] = list(fake_records().get(endpoint, []))[:300]
    columns = [c.name for c in schema.columns()]
    base = records[0] if records and isinstance(records[0], dict) else {"imei": "353549517158563",
                                                                       "gpsTime": "2026-12-01 08:30:00"}
    rng = random.Random(endpoint)
    names = sorted({n for spec in schema.specs for n in getattr(spec, "names", ())} | set(base))
    for name, value in itertools.product(names, ODD_VALUES):
        records.append({**base, name: value})
    for _ in range(200):  # several odd fields at once
        records.append({**base, **{rng.choice(names): rng.choice(ODD_VALUES) for _ in range(3)}})
    records += [None, [], "text", 5]
    checked = 0
    for record in records:
        assert outcome(fast, record) == outcome(slow, record), (endpoint, record, columns)
        checked += 1
    assert checked > len(names) * len(ODD_VALUES)
