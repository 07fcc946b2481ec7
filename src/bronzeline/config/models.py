"""The config file's schema (README.md, config reference). Validated once; stages receive these objects."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bronzeline.cron import validate_cron
from bronzeline.errors import ConfigError
from bronzeline.redact import dsn_password

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INTERVAL = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hour|hours|d|day|days)\s*$"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_interval(value: str | int | float) -> timedelta:
    """'15 minutes', '2h', '30s', '1 day' or a number of seconds."""
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _INTERVAL.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not an interval; write e.g. '15 minutes', '2h' or '1 day'")
    unit = match.group(2)[0]
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[unit])


class ConnectionConfig(Strict):
    type: Literal["postgres"] = "postgres"
    dsn: str = Field(description="libpq connection string or URL; put the password in ${VAR}")
    require_tls: bool = Field(
        default=True, description="refuse a non-loopback connection without sslmode=require or stricter"
    )
    connect_timeout: int = Field(default=10, ge=1, description="seconds to wait for a connection")
    statement_timeout: str | None = Field(
        default=None, description="source query timeout, e.g. '30 min' (none by default)"
    )


class RetentionConfig(Strict):
    processed_days: int | None = Field(default=None, ge=0)
    failed_days: int | None = Field(default=None, ge=0)


class BlobConfig(Strict):
    url: str
    compression: Literal["gzip", "none"] = "gzip"
    compression_level: int = Field(default=1, ge=0, le=9)
    retention: RetentionConfig = RetentionConfig()
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    require_tls: bool = Field(default=True, description="refuse an http:// S3 endpoint that is not on loopback")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a URL such as file://./blob or s3://bucket/prefix")
        return value


class RolesConfig(Strict):
    owner: str | None = None
    readonly: str | None = None


class WarehouseConfig(Strict):
    connection: str = "warehouse"
    bronze_schema: str = "bronze"
    control_schema: str = "dwh_control"
    roles: RolesConfig = RolesConfig()
    lock_timeout: str = Field(default="30s", description="wait this long for a bronze table lock")

    @field_validator("bronze_schema", "control_schema")
    @classmethod
    def _ident(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a plain identifier (letters, digits, underscore)")
        return value


class TableConfig(Strict):
    name: str
    source: str = "source"
    from_: str | None = Field(default=None, alias="from")
    query: str | None = None
    mode: Literal["incremental", "snapshot", "cdc"] = "incremental"
    watermark: str | None = None
    key: list[str] = Field(default_factory=list)
    geometry: list[str] = Field(default_factory=list)
    on_conflict: Literal["nothing", "update"] = "nothing"
    lookback: str | None = None
    geometry_format: Literal["ewkb", "ewkt"] = "ewkb"
    schema_evolution: Literal["none", "add_columns"] = "none"
    cron: str | None = None
    timeout: str | None = Field(default=None, description="whole-run timeout for the table, e.g. '2h' (all attempts)")
    history: bool = Field(default=False, description="cdc: also append every change to bronze.<name>__changes")
    chunks: int | None = Field(default=None, ge=1, le=4096, description="split the first load into N key ranges")
    chunk_rows: int | None = Field(default=None, ge=1, description="split the first load into ranges of ~N rows")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be letters, digits and underscores (it names a table and a folder)")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value)

    @field_validator("lookback", "timeout")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> TableConfig:
        if (self.from_ is None) == (self.query is None):
            raise ValueError("give exactly one of `from: schema.table` or `query: SELECT …`")
        if self.mode == "incremental":
            if not self.watermark:
                raise ValueError("incremental tables need `watermark:` (an insertion-time column)")
            if not self.key:
                raise ValueError("incremental tables need `key:` (the natural unique key)")
        elif self.mode == "cdc":
            if self.query is not None:
                raise ValueError("cdc tables read a table's changes: give `from: schema.table`, not `query:`")
            if self.watermark or self.lookback:
                raise ValueError("cdc tables take no `watermark:` or `lookback:` (the slot's position is theirs)")
            if not self.key:
                raise ValueError("cdc tables need `key:` (the source's primary key or replica identity columns)")
        elif self.watermark or self.lookback:
            raise ValueError("snapshot tables take no `watermark:` or `lookback:`")
        if self.history and self.mode != "cdc":
            raise ValueError("`history: true` is for cdc tables only")
        if self.chunks is not None and self.chunk_rows is not None:
            raise ValueError("give `chunks:` or `chunk_rows:`, not both")
        if (self.chunks is not None or self.chunk_rows is not None) and self.mode != "incremental":
            raise ValueError("`chunks:`/`chunk_rows:` split an incremental table's first load; this table is "
                             f"{self.mode}")
        return self

    @property
    def lookback_interval(self) -> timedelta | None:
        return parse_interval(self.lookback) if self.lookback else None

    @property
    def timeout_interval(self) -> timedelta | None:
        return parse_interval(self.timeout) if self.timeout else None

    @property
    def source_relation(self) -> tuple[str, str] | None:
        """(schema, table) of a `from:` table; schema defaults to public."""
        if self.from_ is None:
            return None
        parts = self.from_.split(".")
        if len(parts) == 1:
            return ("public", parts[0])
        if len(parts) == 2:
            return (parts[0], parts[1])
        raise ValueError(f"from: {self.from_!r} must be `table` or `schema.table`")


def check_cron(value: str | None) -> str | None:
    """Five fields (minute hour day month weekday), or six with seconds last (croniter's convention)."""
    return None if value is None else validate_cron(value)


class RetriesConfig(Strict):
    """Transient failures (connection lost, deadlock, lock timeout, object store 5xx) are retried."""

    attempts: int = Field(default=3, ge=1, le=100, description="attempts per table run, the first included")
    backoff_seconds: float = Field(default=2.0, ge=0, description="wait before the 2nd attempt; doubles after")
    max_backoff_seconds: float = Field(default=60.0, ge=0, description="the longest wait between attempts")


class ScheduleConfig(Strict):
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value)


class CdcConfig(Strict):
    """Change data capture (`mode: cdc` tables): how the slot is read."""

    poll_interval: str = Field(default="1s", description="`stream`: wait between pages when the slot is idle")
    page_changes: int = Field(default=500_000, ge=1, description="at most this many changes per page")
    heartbeat: str = Field(default="1 minute", description="an idle source still advances the slot this often")
    max_retained_wal: str = Field(default="1GB", description="`verify` fails when the slot retains more WAL")
    slot: str | None = Field(default=None, description="slot name (default bronzeline_<project>)")
    publication: str | None = Field(default=None, description="publication name (default bronzeline_<project>)")

    @field_validator("poll_interval", "heartbeat")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @field_validator("max_retained_wal")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("slot", "publication")
    @classmethod
    def _slot_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9_]{1,63}$", value):
            raise ValueError("must be lower-case letters, digits and underscores (PostgreSQL's rule for slots)")
        return value

    @property
    def poll_seconds(self) -> float:
        return parse_interval(self.poll_interval).total_seconds()

    @property
    def heartbeat_seconds(self) -> float:
        return parse_interval(self.heartbeat).total_seconds()

    @property
    def max_retained_wal_bytes(self) -> int:
        return parse_size(self.max_retained_wal)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB)?\s*$")
_SIZE_UNITS = {"B": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_size(value: str | int) -> int:
    """'1GB', '512 MB', '4096' (bytes)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. '1GB' or '512MB'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"])


class ModelsConfig(Strict):
    """Silver/gold models built in the warehouse from plain SQL files (`bronzeline build`)."""

    path: str = Field(default="models", description="folder of models/<schema>/<name>.sql and *.yml, "
                                                    "relative to the config file")
    schedule_build: bool = Field(default=True, description="`schedule` runs `build` after each pass of loads")


class Config(Strict):
    project: str
    timezone: str = "UTC"
    connections: dict[str, ConnectionConfig]
    blob: BlobConfig
    warehouse: WarehouseConfig = WarehouseConfig()
    tables: list[TableConfig] = Field(default_factory=list)
    schedule: ScheduleConfig = ScheduleConfig()
    retries: RetriesConfig = RetriesConfig()
    models: ModelsConfig | None = None
    cdc: CdcConfig = CdcConfig()
    # Where the config file lives: relative paths are relative to it. Not a config key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @property
    def models_dir(self) -> Path | None:
        """The models folder, when the config has a `models:` section."""
        if self.models is None:
            return None
        path = Path(self.models.path)
        return path if path.is_absolute() else self.base_dir / path

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it names a folder)")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use a tz database name such as Africa/Nairobi") from None
        return value

    @model_validator(mode="after")
    def _references(self) -> Config:
        if self.warehouse.connection not in self.connections:
            name = self.warehouse.connection
            raise ValueError(f"warehouse.connection names {name!r}, which is not under connections")
        seen: set[str] = set()
        for table in self.tables:
            if table.name in seen:
                raise ValueError(f"table {table.name!r} is listed twice")
            seen.add(table.name)
            if table.source not in self.connections:
                raise ValueError(f"table {table.name!r}: source {table.source!r} is not under connections")
            table.source_relation  # noqa: B018 - validates the from: shape
        return self

    def slot_name(self) -> str:
        """The CDC slot bronzeline owns: `cdc.slot`, else bronzeline_<project> in PostgreSQL's alphabet."""
        return self.cdc.slot or "bronzeline_" + re.sub(r"[^a-z0-9_]", "_", self.project.lower())[:52]

    def publication_name(self) -> str:
        """The publication the DBA creates for the cdc tables: `cdc.publication`, else like the slot."""
        return self.cdc.publication or "bronzeline_" + re.sub(r"[^a-z0-9_]", "_", self.project.lower())[:52]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables) or "none"
        raise ConfigError(f"no table named {name!r} in the config (tables: {known})")

    def secrets(self) -> list[str]:
        """Every secret value the config carries, for redaction."""
        found = [dsn_password(c.dsn) for c in self.connections.values()]
        found += [self.blob.secret_access_key, self.blob.access_key_id]
        return [s for s in found if s]
