"""Writing simulated rows into tracksolid: COPY for the seeded past (explicit recorded_at),
array INSERTs for live activity (recorded_at left to its DEFAULT now(), i.e. the inserting
transaction's start, exactly as the real ingestion service stamps rows)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from bronzeline.fleet.schema import SCHEMA

Row = tuple[Any, ...]

# COPY column order of the rows history.py builds; `geom` (hex EWKB) is appended when present.
COLUMNS: dict[str, tuple[str, ...]] = {
    "devices": ("imei", "plate", "vehicle_name", "driver_name", "city", "device_model", "fuel_per_100km",
                "odometer_km", "sim_active", "created_at", "updated_at"),
    "live_positions": ("imei", "gps_time", "lat", "lng", "speed", "heading", "ignition", "updated_at"),
    "position_history": ("imei", "gps_time", "recorded_at", "lat", "lng", "speed", "heading", "ignition",
                         "source"),
    "trips": ("imei", "start_time", "end_time", "distance_m", "driving_seconds", "avg_speed", "max_speed",
              "recorded_at"),
    "alarms": ("imei", "alarm_type", "alarm_name", "alarm_time", "lat", "lng", "recorded_at"),
    "parking_events": ("imei", "start_time", "end_time", "duration_seconds", "lat", "lng", "recorded_at"),
    "device_events": ("imei", "event_type", "event_time", "recorded_at"),
    "ingestion_log": ("endpoint", "called_at", "http_status", "rows_received", "duration_ms", "error",
                      "recorded_at"),
}
GEOMETRY_TABLES = ("live_positions", "position_history")

# Array element types for the unnest() INSERTs; a column name means one type in every table.
_TYPES = {
    "imei": "text", "plate": "text", "vehicle_name": "text", "driver_name": "text", "city": "text",
    "device_model": "text", "fuel_per_100km": "numeric", "odometer_km": "numeric", "sim_active": "bool",
    "created_at": "timestamptz", "updated_at": "timestamptz", "gps_time": "timestamptz",
    "recorded_at": "timestamptz", "lat": "float8", "lng": "float8", "speed": "float4", "heading": "int2",
    "ignition": "bool", "source": "text", "geom": "text", "start_time": "timestamptz",
    "end_time": "timestamptz", "distance_m": "int4", "driving_seconds": "int4", "avg_speed": "numeric",
    "max_speed": "numeric", "alarm_type": "text", "alarm_name": "text", "alarm_time": "timestamptz",
    "duration_seconds": "int4", "event_type": "text", "event_time": "timestamptz", "endpoint": "text",
    "called_at": "timestamptz", "http_status": "int4", "rows_received": "int4", "duration_ms": "int4",
    "error": "text",
}


def columns(table: str, geom: bool, *, live: bool = False) -> tuple[str, ...]:
    """The table's written columns; live writes leave recorded_at to its DEFAULT."""
    cols = COLUMNS[table]
    if live:
        cols = tuple(c for c in cols if c != "recorded_at")
    return (*cols, "geom") if geom and table in GEOMETRY_TABLES else cols


def _table(table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))


def copy_rows(conn: psycopg.Connection[Any], table: str, cols: Sequence[str], rows: Iterable[Row]) -> int:
    """COPY rows in; hex EWKB strings feed geometry columns directly."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        _table(table), sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    )
    count = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def insert_rows(
    conn: psycopg.Connection[Any], table: str, cols: Sequence[str], rows: Sequence[Row],
    *, skip_conflicts: bool = False,
) -> int:
    """One INSERT … SELECT FROM unnest(arrays): one round trip, and unlike COPY it can skip
    conflicts (a re-polled fix hits position_history's unique key). Returns rows inserted."""
    if not rows:
        return 0
    arrays = [list(values) for values in zip(*rows, strict=True)]
    selected = [
        sql.SQL("u.{}::geometry").format(sql.Identifier(c)) if c == "geom"
        else sql.SQL("u.{}").format(sql.Identifier(c))
        for c in cols
    ]
    statement = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u ({}){}").format(
        _table(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(selected),
        sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(_TYPES[c])) for c in cols),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(" ON CONFLICT DO NOTHING") if skip_conflicts else sql.SQL(""),
    )
    with conn.cursor() as cur:
        cur.execute(statement, arrays)
        return cur.rowcount


def upsert_live(conn: psycopg.Connection[Any], rows: Sequence[Row], geom: bool) -> int:
    """Replace each unit's current fix when the new one is newer; updated_at = now()."""
    cols = columns("live_positions", geom, live=True)
    cols = tuple(c for c in cols if c != "updated_at")
    if not rows:
        return 0
    arrays = [list(values) for values in zip(*rows, strict=True)]
    updated = [c for c in cols if c != "imei"]
    statement = sql.SQL(
        "INSERT INTO {t} ({cols}, updated_at) SELECT {sel}, now() FROM unnest({arrays}) AS u ({cols}) "
        "ON CONFLICT (imei) DO UPDATE SET {sets}, updated_at = now() "
        "WHERE {t}.gps_time < excluded.gps_time"
    ).format(
        t=_table("live_positions"),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sel=sql.SQL(", ").join(
            sql.SQL("u.{}::geometry" if c == "geom" else "u.{}").format(sql.Identifier(c)) for c in cols
        ),
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(_TYPES[c])) for c in cols),
        sets=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in updated),
    )
    with conn.cursor() as cur:
        cur.execute(statement, arrays)
        return cur.rowcount


def add_odometer(conn: psycopg.Connection[Any], km_by_imei: dict[str, float]) -> int:
    """devices is updated in place by the real service too: that is why it is a snapshot table."""
    if not km_by_imei:
        return 0
    imeis = sorted(km_by_imei)
    statement = sql.SQL(
        "UPDATE {} AS d SET odometer_km = d.odometer_km + u.km, updated_at = now() "
        "FROM unnest(%s::text[], %s::numeric[]) AS u (imei, km) WHERE d.imei = u.imei"
    ).format(_table("devices"))
    with conn.cursor() as cur:
        cur.execute(statement, [imeis, [round(km_by_imei[i], 1) for i in imeis]])
        return cur.rowcount
