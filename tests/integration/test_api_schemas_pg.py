"""What the endpoint schemas map is what PostgreSQL takes: each schema's columns as a table, its sample records
(and the boundary values the converters let through) copied in, the exact digits read back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bronzeline.config.endpoints import ENDPOINTS
from bronzeline.sources.api.schema import schema_for
from tests.unit.test_api_schemas import FETCHED, POINT, SAMPLES, TRIP

EDGES: dict[str, list[dict[str, Any]]] = {
    "track": [{**POINT, "lat": "-90", "lng": "180", "satellite": 32767, "gpsSpeed": "999999999999999.123456789",
               "direction": "1e-30", "gpsTime": "0001-01-01 00:00:00"},
              {**POINT, "lat": "89.123456789012345678901234567", "satellite": -32768, "gpsTime": 253402300799}],
    "trips": [{**TRIP, "distance": "999999999999999.999", "runTimeSecond": 2**31 - 1}],
    "pushgps": [{**SAMPLES["pushgps"], "status": 2**63 - 1}],
    "pushobd": [{"deviceImei": "1", "nested": {"é": ["ü", 1.5, None, True]}, "big": 10**30}],
}


def test_mapped_values_copy_into_their_column_types(new_database: Any) -> None:
    dsn = new_database(postgis=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for endpoint in sorted(ENDPOINTS):
            schema = schema_for(endpoint)
            columns = schema.columns()
            table = sql.Identifier(f"t_{endpoint}")
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns)))
            records = [SAMPLES[endpoint], *EDGES.get(endpoint, [])]
            names = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)) as copy:
                for record in records:
                    row = schema.map(record, FETCHED)
                    copy.write_row([Jsonb(v) if isinstance(v, (dict, list)) else v for v in row.values()])
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            assert count == (len(records),), endpoint
        got = conn.execute("SELECT distance_m::text, distance_km::text, start_lat::text FROM t_trips "
                           "ORDER BY distance_m").fetchall()
        assert got[0] == ("25000", "25.000", "22.577144898887813")
        assert got[1][1] == "999999999999.999999"
        speed = conn.execute("SELECT gps_speed FROM t_track ORDER BY satellite DESC LIMIT 1").fetchone()
        assert speed == (Decimal("999999999999999.123456789"),)
