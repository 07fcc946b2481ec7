"""The config file's schema (README.md, config reference). Validated once; stages receive these objects."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from bronzeline.config.endpoints import ENDPOINTS, endpoints_for
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


class TracksolidConfig(Strict):
    """The Jimi IoT / Tracksolid Pro open platform (`type: tracksolid`). Secrets only as ${VAR}."""

    type: Literal["tracksolid"]
    url: str = Field(default="https://eu-open.tracksolidpro.com/route/rest",
                     description="the platform's route/rest URL for the account's region")
    app_key: str = Field(description="the app key Jimi issued")
    app_secret: str = Field(description="the app secret Jimi issued; write it as ${VAR}")
    user_id: str = Field(description="the Tracksolid account that logs in")
    password_md5: str = Field(description="lower-case MD5 of the account's password; write it as ${VAR}")
    targets: list[str] = Field(default_factory=list, description="accounts whose devices are read (default [user_id])")
    max_imeis: int = Field(default=50, ge=1, le=100, description="IMEIs per call (the platform documents 100)")
    timeout: str = Field(default="30s", description="HTTP timeout per call")
    token_expires_in: int = Field(default=7200, ge=60, le=7200, description="token lifetime asked for, seconds")
    refresh_before: str = Field(default="10 minutes", description="refresh the token this long before it expires")
    rate_limit_retries: int = Field(default=6, ge=0, le=50, description="retries of a call refused with code 1006")
    rate_limit_backoff: str = Field(default="1s", description="first wait after code 1006; doubles, with jitter")
    rate_limit_max_backoff: str = Field(default="60s", description="the longest wait after code 1006")
    calls_per_minute: int | None = Field(default=None, ge=1, description="client-side call budget (none by default)")
    max_calls_per_run: int | None = Field(default=None, ge=1, description="stop a run that would make more calls")
    map_type: Literal["GOOGLE"] | None = Field(default=None, description="GOOGLE: corrected coordinates; "
                                                                         "none: raw WGS84")
    require_tls: bool = Field(default=True, description="refuse an http:// URL that is not on loopback")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL such as https://eu-open.tracksolidpro.com/route/rest")
        return value

    @field_validator("timeout", "refresh_before", "rate_limit_backoff", "rate_limit_max_backoff")
    @classmethod
    def _interval(cls, value: str) -> str:
        parse_interval(value)
        return value

    @property
    def accounts(self) -> list[str]:
        return self.targets or [self.user_id]

    def secret_values(self) -> list[str]:
        return [self.app_secret, self.password_md5]


class PushConfig(Strict):
    """The push receiver's side of the platform's webhooks (`type: tracksolid_push`, `bronzeline receive`)."""

    type: Literal["tracksolid_push"]
    token: str = Field(description="the shared token the platform sends with every push; write it as ${VAR}")
    spool: str = Field(default="./spool", description="folder for acknowledged pushes not yet in a batch "
                                                      "(relative to the config file)")
    flush_seconds: float = Field(default=10.0, gt=0, description="seal the spool into batch files this often")
    max_body: str = Field(default="1MB", description="larger bodies get 413")

    @field_validator("max_body")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @property
    def max_body_bytes(self) -> int:
        return parse_size(self.max_body)

    def secret_values(self) -> list[str]:
        return [self.token]


def _connection_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type") or "postgres")
    return str(getattr(value, "type", "postgres"))


AnyConnection = Annotated[
    Annotated[ConnectionConfig, Tag("postgres")]
    | Annotated[TracksolidConfig, Tag("tracksolid")]
    | Annotated[PushConfig, Tag("tracksolid_push")],
    Discriminator(_connection_type, custom_error_type="connection_type",
                  custom_error_message="type must be postgres, tracksolid or tracksolid_push"),
]
API_TYPES = ("tracksolid", "tracksolid_push")


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
    endpoint: str | None = Field(default=None, description="API and push tables: what the table reads "
                                                         "(devices, track, alarms, pushgps, …)")
    settle: str | None = Field(default=None, description="API tables: the window ends this long before now "
                                                       "(default 2 minutes)")
    since: str | None = Field(default=None, description="API tables: how far back the first window reaches "
                                                      "(default 1 day)")

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

    @field_validator("lookback", "timeout", "settle", "since")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> TableConfig:
        if self.endpoint is not None:
            return self._api_shape()
        if self.settle or self.since:
            raise ValueError("`settle:` and `since:` are for API tables (with `endpoint:`)")
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

    def _api_shape(self) -> TableConfig:
        """An API or push table: its key and watermark come from the endpoint (filled in by Config)."""
        shape = ENDPOINTS.get(self.endpoint or "")
        if shape is None:
            raise ValueError(f"endpoint {self.endpoint!r} is not known; use one of {', '.join(ENDPOINTS)}")
        if self.from_ is not None or self.query is not None:
            raise ValueError("API tables read an `endpoint:`, not `from:` or `query:`")
        if "mode" not in self.model_fields_set:
            object.__setattr__(self, "mode", shape.modes[0])
        if self.mode not in shape.modes:
            raise ValueError(f"endpoint {shape.name} is read as mode {' or '.join(shape.modes)}, not {self.mode}")
        if self.key and tuple(self.key) != shape.key:
            raise ValueError(f"endpoint {shape.name} has the key ({', '.join(shape.key)}); leave `key:` out")
        if self.watermark and self.watermark != shape.watermark:
            raise ValueError(f"endpoint {shape.name} is windowed on {shape.watermark}; leave `watermark:` out")
        if self.chunks is not None or self.chunk_rows is not None or self.history:
            raise ValueError("`chunks:`, `chunk_rows:` and `history:` are for database tables")
        if self.lookback and self.mode != "incremental":
            raise ValueError("`lookback:` is for incremental tables")
        return self

    @property
    def is_api(self) -> bool:
        """An API or push table (its source is not a database)."""
        return self.endpoint is not None

    @property
    def settle_interval(self) -> timedelta:
        return parse_interval(self.settle or "2 minutes")

    @property
    def since_interval(self) -> timedelta:
        return parse_interval(self.since or "1 day")

    @property
    def lookback_interval(self) -> timedelta | None:
        return parse_interval(self.lookback) if self.lookback else None

    @property
    def timeout_interval(self) -> timedelta | None:
        return parse_interval(self.timeout) if self.timeout else None

    @property
    def source_relation(self) -> tuple[str, str] | None:
        """(schema, table) of a `from:` table; schema defaults to public."""
        if self.from_ is None or self.endpoint is not None:
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
    connections: dict[str, AnyConnection]
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
        if not isinstance(self.connections[self.warehouse.connection], ConnectionConfig):
            raise ValueError(f"warehouse.connection {self.warehouse.connection!r} must be a PostgreSQL connection")
        seen: set[str] = set()
        resolved: list[TableConfig] = []
        for table in self.tables:
            if table.name in seen:
                raise ValueError(f"table {table.name!r} is listed twice")
            seen.add(table.name)
            if table.source not in self.connections:
                raise ValueError(f"table {table.name!r}: source {table.source!r} is not under connections")
            table.source_relation  # noqa: B018 - validates the from: shape
            resolved.append(_with_endpoint(table, self.connections[table.source].type))
        # Tables are frozen: API tables get their endpoint's key and watermark by replacement.
        object.__setattr__(self, "tables", resolved)
        return self

    def database(self, name: str) -> ConnectionConfig:
        """Connection `name`, which must be a PostgreSQL connection."""
        found = self.connections[name]
        if not isinstance(found, ConnectionConfig):
            raise ConfigError(f"connection {name!r} is {found.type}, not a PostgreSQL database")
        return found

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
        found: list[str | None] = []
        for c in self.connections.values():
            found += [dsn_password(c.dsn)] if isinstance(c, ConnectionConfig) else c.secret_values()
        found += [self.blob.secret_access_key, self.blob.access_key_id]
        return [s for s in found if s]


def _with_endpoint(table: TableConfig, connection_type: str) -> TableConfig:
    """Check that a table and its source's type go together; fill in an API table's key and watermark."""
    if table.endpoint is None:
        if connection_type in API_TYPES:
            names = ", ".join(endpoints_for(connection_type))
            raise ValueError(f"table {table.name!r}: source {table.source!r} is a {connection_type} connection; "
                             f"give the table `endpoint:` ({names})")
        return table
    shape = ENDPOINTS[table.endpoint]
    if connection_type != shape.connection_type:
        names = ", ".join(endpoints_for(connection_type)) or "none: it is a database"
        raise ValueError(f"table {table.name!r}: endpoint {table.endpoint} is read from a {shape.connection_type} "
                         f"connection, and {table.source!r} is {connection_type} (its endpoints: {names})")
    return table.model_copy(update={"key": list(shape.key), "watermark": shape.watermark})
