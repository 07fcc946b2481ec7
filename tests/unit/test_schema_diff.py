"""The one schema comparator (migrate, run, verify and drift ask it) without a database."""

from __future__ import annotations

from bronzeline.sources.base import Column
from bronzeline.warehouse.ddl import BronzeColumn, column_differences
from bronzeline.warehouse.schema_diff import ColumnChange, compare, same_type


def col(name: str, typ: str) -> Column:
    return Column(name=name, type=typ, source_type=typ)


SOURCE = [col("id", "bigint"), col("plate", "character varying(20)"), col("heading", "integer"),
          col("geom", "public.geometry(Point, 4326)"), col("Speed", "numeric(5, 2)"), col("new", "jsonb")]
BRONZE = [BronzeColumn("id", "bigint"), BronzeColumn("plate", "character varying(10)"),
          BronzeColumn("heading", "smallint"), BronzeColumn("geom", "geometry(Point,4326)"),
          BronzeColumn("Speed", "NUMERIC(5,2)"), BronzeColumn("gone", "boolean")]


def test_typed_changes_in_source_order_then_removed() -> None:
    assert compare(SOURCE, BRONZE) == [
        ColumnChange("typmod", "plate", "character varying(20)", "character varying(10)"),
        ColumnChange("retyped", "heading", "integer", "smallint"),
        ColumnChange("added", "new", "jsonb", None),
        ColumnChange("removed", "gone", None, "boolean"),
    ]
    # spacing, case and a public. prefix are not differences
    assert compare([SOURCE[0], SOURCE[3], SOURCE[4]], [BRONZE[0], BRONZE[3], BRONZE[4]]) == []


def test_normalisation() -> None:
    assert same_type("public.geometry(Point, 4326)", "geometry(point,4326)")
    assert same_type("timestamp(3) with time zone", "timestamp(3)  with time zone")
    assert not same_type("numeric(5,2)", "numeric(5,3)")
    assert not same_type("text[]", "text")


def test_column_differences_keeps_its_strings() -> None:
    """ddl.column_differences (the runner's call) is a thin wrapper over compare()."""
    assert column_differences(SOURCE, BRONZE) == [
        "column plate is character varying(20) at the source but character varying(10) in bronze",
        "column heading is integer at the source but smallint in bronze",
        "column new (jsonb) is at the source but not in bronze",
        "column gone is in bronze but no longer at the source",
    ]
    assert column_differences(SOURCE[:1], BRONZE[:1]) == []
