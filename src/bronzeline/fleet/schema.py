"""The fleet source schema `tracksolid`, as the reference fleet's ingestion service would create it.

Functions rather than a .sql file because the geometry columns exist only when PostGIS is
installed (the embedded demo server has none; it keeps lat/lng only).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bronzeline.errors import SourceError

SCHEMA = "tracksolid"

# Tables that grow by insertion and carry `recorded_at` (the only safe watermark: gps_time is
# the device's clock and arrives late or out of order).
INCREMENTAL_TABLES = (
    "position_history",
    "trips",
    "alarms",
    "parking_events",
    "device_events",
    "ingestion_log",
)
SNAPSHOT_TABLES = ("devices", "live_positions")
TABLES = SNAPSHOT_TABLES + INCREMENTAL_TABLES

_GEOM = ",\n    geom geometry(Point, 4326)"

_DDL: dict[str, str] = {
    "devices": """
CREATE TABLE IF NOT EXISTS {schema}.devices (
    imei text PRIMARY KEY CHECK (imei ~ '^[0-9]{{15}}$'),
    plate text NOT NULL,
    vehicle_name text NOT NULL,
    driver_name text,
    city text NOT NULL,
    device_model text NOT NULL,
    fuel_per_100km numeric(5,2),
    odometer_km numeric(10,1) NOT NULL DEFAULT 0,
    sim_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)""",
    "live_positions": """
CREATE TABLE IF NOT EXISTS {schema}.live_positions (
    imei text PRIMARY KEY REFERENCES {schema}.devices (imei),
    gps_time timestamptz NOT NULL,
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    speed real,
    heading smallint,
    ignition boolean,
    updated_at timestamptz NOT NULL DEFAULT now(){geom}
)""",
    "position_history": """
CREATE TABLE IF NOT EXISTS {schema}.position_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    gps_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    speed real,
    heading smallint,
    ignition boolean,
    source text NOT NULL CHECK (source IN ('poll', 'track_list')){geom},
    UNIQUE (imei, gps_time, source)
)""",
    "trips": """
CREATE TABLE IF NOT EXISTS {schema}.trips (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    distance_m integer NOT NULL,
    driving_seconds integer,
    avg_speed numeric(6,2),
    max_speed numeric(6,2),
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
    "alarms": """
CREATE TABLE IF NOT EXISTS {schema}.alarms (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    alarm_type text NOT NULL,
    alarm_name text,
    alarm_time timestamptz NOT NULL,
    lat double precision,
    lng double precision,
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
    "parking_events": """
CREATE TABLE IF NOT EXISTS {schema}.parking_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    duration_seconds integer NOT NULL,
    lat double precision,
    lng double precision,
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
    "device_events": """
CREATE TABLE IF NOT EXISTS {schema}.device_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    imei text NOT NULL,
    event_type text NOT NULL,
    event_time timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
    "ingestion_log": """
CREATE TABLE IF NOT EXISTS {schema}.ingestion_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint text NOT NULL,
    called_at timestamptz NOT NULL,
    http_status integer,
    rows_received integer,
    duration_ms integer,
    error text,
    recorded_at timestamptz NOT NULL DEFAULT now()
)""",
}

# Beyond the recorded_at index every incremental table gets: what the service's own reads use.
_EXTRA_INDEXES: dict[str, tuple[str, ...]] = {
    "position_history": ("imei", "gps_time"),
    "trips": ("imei", "start_time"),
    "alarms": ("imei", "alarm_time"),
}


def has_postgis(conn: psycopg.Connection[Any]) -> bool:
    """True when the PostGIS extension is installed in the connected database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone()
    return row is not None


def has_geometry(conn: psycopg.Connection[Any], table: str) -> bool:
    """True when tracksolid.<table> has the `geom` column (it was created with PostGIS)."""
    row = conn.execute(
        """SELECT 1 FROM information_schema.columns
           WHERE table_schema = %s AND table_name = %s AND column_name = 'geom'""",
        (SCHEMA, table),
    ).fetchone()
    return row is not None


def create_source_schema(conn: psycopg.Connection[Any], postgis: bool) -> None:
    """Create schema tracksolid and its tables and indexes (idempotent), then commit.

    With postgis, live_positions and position_history get `geom geometry(Point, 4326)`;
    PostGIS itself must already be installed (a DBA's job; docs/operations.md).
    """
    if postgis and not has_postgis(conn):
        raise SourceError("postgis=True but the postgis extension is not installed in this database")
    schema = sql.Identifier(SCHEMA)
    geom = sql.SQL(_GEOM if postgis else "")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        for table in TABLES:
            conn.execute(sql.SQL(_DDL[table].strip()).format(schema=schema, geom=geom))
        for table in INCREMENTAL_TABLES:
            _index(conn, table, ("recorded_at",))
            if table in _EXTRA_INDEXES:
                _index(conn, table, _EXTRA_INDEXES[table])
    if not conn.autocommit:
        conn.commit()


def _index(conn: psycopg.Connection[Any], table: str, columns: tuple[str, ...]) -> None:
    name = f"{table}_{'_'.join(columns)}_idx"
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
            sql.Identifier(name),
            sql.Identifier(SCHEMA),
            sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
    )


def drop_source_schema(conn: psycopg.Connection[Any]) -> None:
    """Drop schema tracksolid and everything in it, then commit."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    if not conn.autocommit:
        conn.commit()


def grant_readonly(conn: psycopg.Connection[Any], role: str, *, read_all_stats: bool = False) -> None:
    """Let `role` read every tracksolid table, present and future, then commit.

    read_all_stats also grants pg_read_all_stats, which bronzeline's source login needs to see
    other sessions' open transactions (docs/design.md, "No lost rows"); granting it takes a superuser.
    """
    schema, who = sql.Identifier(SCHEMA), sql.Identifier(role)
    with conn.transaction():
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, who))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, who))
        conn.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(schema, who)
        )
        if read_all_stats:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(who))
    if not conn.autocommit:
        conn.commit()
