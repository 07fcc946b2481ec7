"""drift's comparison without a database: kinds of change, typmod widening, unit hints, actions."""

from __future__ import annotations

import pytest

from bronzeline.config.models import TableConfig
from bronzeline.observe.drift import compare, split_type
from bronzeline.observe.units import unit_change
from bronzeline.sources.base import Column
from bronzeline.warehouse.ddl import BronzeColumn


def bronze_of(types: dict[str, str]) -> list[BronzeColumn]:
    return [BronzeColumn(n, t) for n, t in types.items()]


def col(name: str, typ: str) -> Column:
    return Column(name=name, type=typ, source_type=typ)


def table(**extra: object) -> TableConfig:
    return TableConfig.model_validate({"name": "t", "from": "s.t", "watermark": "ts", "key": ["id"], **extra})


@pytest.mark.parametrize(("typ", "split"), [
    ("character varying(15)", ("character varying", "15")),
    ("character varying(15)[]", ("character varying[]", "15")),
    ("numeric(10, 3)", ("numeric", "10,3")),
    ("timestamp(3) with time zone", ("timestamp with time zone", "3")),
    ("geometry(Point,4326)", ("geometry", "point,4326")),
    ("public.geometry(Point, 4326)", ("geometry", "point,4326")),
    ("text", ("text", "")),
])
def test_split_type(typ: str, split: tuple[str, str]) -> None:
    assert split_type(typ) == split


def test_each_kind_with_its_action() -> None:
    bronze = {"id": "bigint", "ts": "timestamp with time zone", "plate": "character varying(10)",
              "fuel": "numeric(5,2)", "heading": "smallint", "geom": "geometry(Point,4326)", "distance_m": "numeric",
              "gone": "boolean", "same": "numeric(5,2)"}
    source = [col("id", "bigint"), col("ts", "timestamp with time zone"), col("plate", "character varying(20)"),
              col("fuel", "numeric(4,1)"), col("heading", "integer"), col("geom", "geometry(Point,3857)"),
              col("distance_km", "numeric"), col("new", "jsonb"), col("same", "numeric(5, 2)")]
    found = {(c.kind, c.column): c for c in compare(table(), "bronze", source, bronze_of(bronze))}
    assert set(found) == {("typmod", "plate"), ("typmod", "fuel"), ("retyped", "heading"), ("typmod", "geom"),
                          ("added", "distance_km"), ("added", "new"), ("removed", "distance_m"), ("removed", "gone"),
                          ("unit", "distance_km")}
    assert "widened" in found[("typmod", "plate")].action
    assert "narrowed" in found[("typmod", "fuel")].action
    assert 'ST_Transform("geom", 3857)' in found[("typmod", "geom")].action
    assert "never retypes" in found[("retyped", "heading")].action
    assert 'ALTER TABLE "bronze"."t" ADD COLUMN "new" jsonb' in found[("added", "new")].action
    assert "never drops" in found[("removed", "gone")].action
    assert "km instead of m" in found[("unit", "distance_km")].action
    evolving = {(c.kind, c.column): c for c in compare(table(schema_evolution="add_columns"), "bronze", source,
                                                         bronze_of(bronze))}
    assert evolving[("added", "new")].action.startswith("run `bronzeline migrate`")
    assert compare(table(), "bronze", [col("id", "bigint")], bronze_of({"id": "bigint"})) == []


def test_suggested_sql_quotes_identifiers() -> None:
    source = [col("id", "bigint"), col("Speed", "numeric(7,2)"), col("Heading", "integer"), col("New Col", "text")]
    bronze = bronze_of({"id": "bigint", "Speed": "numeric(5,2)", "Heading": "smallint", "Old": "boolean"})
    found = {(c.kind, c.column): c.action for c in compare(table(name="Trips"), "Bronze", source, bronze)}
    assert 'ALTER TABLE "Bronze"."Trips" ALTER COLUMN "Speed" TYPE numeric(7,2)' in found[("typmod", "Speed")]
    assert 'ALTER COLUMN "Heading" TYPE integer USING "Heading"::integer' in found[("retyped", "Heading")]
    assert 'ALTER TABLE "Bronze"."Trips" ADD COLUMN "New Col" text' in found[("added", "New Col")]
    assert 'ALTER TABLE "Bronze"."Trips" DROP COLUMN "Old"' in found[("removed", "Old")]
    assert 'NULL::boolean AS "Old"' in found[("removed", "Old")]


@pytest.mark.parametrize(("old", "new", "hint"), [
    ("distance_m", "distance_km", "length in km instead of m"),
    ("duration_s", "duration_ms", "time in ms instead of s"),
    ("speed_kmh", "speed_mph", "speed in mph"),
    ("weight_kg", "weight_g", "mass in g instead of kg"),
    ("driving_seconds", "driving_s", "spelled differently"),
    ("trip_id", "trip_km", None),
    ("distance_m", "duration_s", None),
    ("m", "km", None),
])
def test_unit_change(old: str, new: str, hint: str | None) -> None:
    found = unit_change(old, new)
    assert (found is None) if hint is None else (found is not None and hint in found)
