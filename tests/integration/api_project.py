"""A bronzeline project reading the package's fake Tracksolid platform over HTTP on loopback, with a real
warehouse (the `pipeline` fixture's), and ground truth taken from the fake."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bronzeline.fleet.jimi_fake import FakePlatform, FakeSettings
from tests.integration.pipeline import Pipeline

TABLES = """\
  - {name: api_devices, source: jimi, endpoint: devices}
  - {name: api_live, source: jimi, endpoint: live_positions}
  - {name: api_track, source: jimi, endpoint: track, lookback: 1 hour, since: 3 hours}
  - {name: api_alarms, source: jimi, endpoint: alarms, since: 2 days}
  - {name: api_trips, source: jimi, endpoint: trips, lookback: 3 hours, since: 2 days}
  - {name: api_parking, source: jimi, endpoint: parking, lookback: 3 hours, since: 2 days}
"""
KEYS = {"api_track": ("track", ("imei", "gps_time")), "api_alarms": ("alarms", ("imei", "alarm_type", "alarm_time")),
        "api_trips": ("trips", ("imei", "start_time")), "api_parking": ("parking", ("imei", "start_time"))}


@dataclass
class ApiProject:
    pipeline: Pipeline
    fake: FakePlatform

    def write(self, tables: str = TABLES, connection: str = "") -> None:
        s = self.fake.settings
        targets = ", ".join(f'"{t}"' for t in s.targets)
        self.pipeline.config_path.write_text(
            "project: fleet\n"
            "connections:\n"
            "  warehouse: {dsn: \"${WAREHOUSE_DSN}\"}\n"
            "  jimi:\n"
            "    type: tracksolid\n"
            "    url: \"${JIMI_URL}\"\n"
            "    app_key: \"${JIMI_APP_KEY}\"\n"
            "    app_secret: \"${JIMI_APP_SECRET}\"\n"
            "    user_id: \"${JIMI_USER_ID}\"\n"
            "    password_md5: \"${JIMI_PASSWORD_MD5}\"\n"
            f"    targets: [{targets}]\n"
            "    rate_limit_backoff: 0.01s\n"
            "    rate_limit_max_backoff: 0.05s\n"
            f"{connection}"
            "blob:\n"
            "  url: file://./blob\n"
            "retries: {attempts: 1}\n"
            "tables:\n" + tables)
        self.pipeline.env.update(self.fake.env())

    def windows(self, table: str) -> list[tuple[datetime, datetime]]:
        with self.pipeline.wh() as conn:
            rows = conn.execute("SELECT window_start, window_end FROM dwh_control.extract_runs "
                                "WHERE table_name = %s AND status = 'loaded' ORDER BY run_id", (table,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def keys(self, table: str, key: tuple[str, ...]) -> list[tuple[Any, ...]]:
        with self.pipeline.wh() as conn:
            cols = ", ".join(key)
            return [tuple(r) for r in conn.execute(f"SELECT {cols} FROM bronze.{table} ORDER BY {cols}").fetchall()]

    def truth_keys(self, table: str, as_of: datetime | None = None) -> list[tuple[Any, ...]]:
        """The keys of every record the fake serves for the table's loaded windows (their union) as of a moment."""
        endpoint = KEYS[table][0]
        spans = self.windows(table)
        records = self.fake.truth(endpoint, start=spans[0][0], end=spans[-1][1], as_of=as_of)
        return sorted({tuple(typed_key(endpoint, r)) for r in records})

    def assert_exactly_once(self, table: str) -> None:
        """Bronze holds each record the fake served for the windows once: at least what was visible when the
        last window was read (its end + settle), at most what is visible now (trips and late fixes appear
        only later on the platform)."""
        got = self.keys(table, KEYS[table][1])
        assert len(got) == len(set(got)), table
        read_at = self.windows(table)[-1][1] + timedelta(minutes=2)
        missing = sorted(set(self.truth_keys(table, as_of=read_at)) - set(got))
        extra = sorted(set(got) - set(self.truth_keys(table)))
        assert not missing and not extra, (table, missing[:5], extra[:5])

def utc(text: str) -> datetime:
    if text.endswith("Z") or "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def typed_key(endpoint: str, record: dict[str, Any]) -> tuple[Any, ...]:
    """A vendor record's bronze key, computed here independently of the package's schemas."""
    if endpoint == "track":
        return (str(record["imei"]), utc(record["gpsTime"]))
    if endpoint == "alarms":
        return (str(record["imei"]), str(record["alertTypeId"]), utc(record["alertTime"]))
    return (str(record["imei"]), utc(record["startTime"]))


def metres_to_km(value: Any) -> Decimal:
    return Decimal(str(value)) / 1000


@contextmanager
def api_project(pipeline: Pipeline, **settings: Any) -> Iterator[ApiProject]:
    fake = FakePlatform(FakeSettings(**settings)).start()
    try:
        project = ApiProject(pipeline, fake)
        project.write()
        yield project
    finally:
        fake.stop()
