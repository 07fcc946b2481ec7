"""Checks as SQL, without a database: the failing-rows query each kind compiles to, and the messages
for checks declared wrong."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bronzeline.errors import ConfigError
from bronzeline.models.checks import passes
from bronzeline.models.checks_compile import compile_check, count_query, parse_age, parse_relation, validate_check
from bronzeline.models.spec import CHECK_KINDS, CheckSpec

ORIGIN = "models/gold/props.yml"


def spec(kind: str, column: str | None = None, **args: Any) -> CheckSpec:
    extra = {k: args.pop(k) for k in ("severity", "mostly", "where", "key") if k in args}
    return CheckSpec(kind, "gold.trips", column, args, origin=ORIGIN, **extra)


def sql_of(s: CheckSpec, target: str | None = None) -> str:
    return compile_check(s, target).as_string(None)


# ------------------------------------------------------------------------------------ compile_check
def test_row_level_kinds_select_the_failing_rows() -> None:
    assert sql_of(spec("not_null", "km")) == 'SELECT t.* FROM "gold"."trips" AS t WHERE "t"."km" IS NULL'
    assert sql_of(spec("accepted_values", "kind", values=["a", "b", 3])) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE "t"."kind" NOT IN (\'a\', \'b\', \'3\')')
    # quote: false puts values in as SQL, as dbt does
    assert sql_of(spec("accepted_values", "n", values=[1, "2 + 1"], quote=False)) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE "t"."n" NOT IN (1, 2 + 1)')
    assert sql_of(spec("accepted_range", "km", min_value=0, max_value=3000)) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE NOT ("t"."km" >= 0 AND "t"."km" <= 3000)')
    assert sql_of(spec("accepted_range", "km", min_value=0, inclusive=False)) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE NOT ("t"."km" > 0)')


def test_expressions_are_parenthesized_in_both_forms() -> None:
    assert sql_of(spec("expression_is_true", expression="km >= 0 OR km IS NULL")) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE NOT (km >= 0 OR km IS NULL)')
    # dbt's column form: `<column> <expression>`
    assert sql_of(spec("expression_is_true", "km", expression=">= 0")) == (
        'SELECT t.* FROM "gold"."trips" AS t WHERE NOT ("t"."km" >= 0)')


def test_where_limits_the_checked_relation_only() -> None:
    q = sql_of(spec("relationships", "imei", to="ref('silver.devices')", field="imei", where="day > '2024-01-01'"))
    assert q == ('SELECT t.* FROM (SELECT * FROM "gold"."trips" WHERE (day > \'2024-01-01\')) AS t '
                 'WHERE "t"."imei" IS NOT NULL AND NOT EXISTS '
                 '(SELECT 1 FROM "silver"."devices" AS p WHERE "p"."imei" = "t"."imei")')


def test_a_target_is_read_instead_of_the_relation() -> None:
    q = sql_of(spec("not_null", "km"), target="gold.__stage_trips")
    assert q == 'SELECT t.* FROM "gold"."__stage_trips" AS t WHERE "t"."km" IS NULL'


def test_unique_groups_duplicated_values() -> None:
    assert sql_of(spec("unique", "trip_id")) == (
        'SELECT "t"."trip_id", count(*) AS n_records FROM "gold"."trips" AS t WHERE "t"."trip_id" IS NOT NULL '
        'GROUP BY "t"."trip_id" HAVING count(*) > 1')
    q = sql_of(spec("unique", columns=["imei", "gps_time"]))
    assert 'GROUP BY "t"."imei", "t"."gps_time" HAVING count(*) > 1' in q
    assert '"t"."imei" IS NOT NULL AND "t"."gps_time" IS NOT NULL' in q


def test_table_level_kinds() -> None:
    assert sql_of(spec("row_count", min=1, max=10)) == (
        'SELECT count(*) AS row_count FROM "gold"."trips" AS t HAVING NOT (count(*) >= 1 AND count(*) <= 10)')
    q = sql_of(spec("freshness", field="recorded_at", warn_after={"count": 12, "period": "hour"},
                    error_after="1 day"))
    assert q == ('SELECT max("t"."recorded_at") AS latest, now() - max("t"."recorded_at") AS age FROM '
                 '"gold"."trips" AS t HAVING (max("t"."recorded_at") IS NULL OR max("t"."recorded_at") < '
                 "now() - '1 day 0:00:00'::interval)")
    assert sql_of(spec("reconcile")) == 'SELECT count(*) AS bronze_rows FROM "gold"."trips" AS t'


def test_identifiers_are_quoted_never_spliced() -> None:
    q = sql_of(CheckSpec("not_null", 'we"ird.ta ble', 'co"l'))
    assert q == 'SELECT t.* FROM "we""ird"."ta ble" AS t WHERE "t"."co""l" IS NULL'


def test_the_count_query_reads_the_sample_only_when_a_row_failed() -> None:
    q = count_query(spec("not_null", "km", key=("trip_id",))).as_string(None)
    assert q.startswith("SELECT c.total_rows, c.failing_rows, c.warned, CASE WHEN c.failing_rows > 0 THEN")
    assert 'jsonb_build_object(\'trip_id\', "t"."trip_id", \'km\', "t"."km")' in q
    assert "LIMIT 10" in q
    assert 'count(*) FILTER (WHERE "t"."km" IS NULL) AS failing_rows' in q
    # no key: the whole row
    assert "to_jsonb(t)" in count_query(spec("expression_is_true", expression="km > 0")).as_string(None)


def test_an_invalid_check_does_not_compile() -> None:
    with pytest.raises(ConfigError, match="accepted_values needs `values"):
        compile_check(spec("accepted_values", "kind"))


# ------------------------------------------------------------------------------------ validate_check
def test_every_kind_as_dbt_writes_it_is_valid() -> None:
    good = [spec("not_null", "km"), spec("unique", "trip_id"), spec("unique", columns=["a", "b"]),
            spec("accepted_values", "kind", values=["a"], quote=True),
            spec("relationships", "imei", to="source('bronze', 'devices')", field="imei"),
            spec("accepted_range", "km", min_value=0, max_value=3000, inclusive=True),
            spec("expression_is_true", expression="km >= 0"), spec("expression_is_true", "km", expression=">= 0"),
            spec("row_count", min=1), spec("freshness", field="day", error_after={"count": 2, "period": "days"}),
            spec("reconcile"), spec("not_null", "km", severity="warn", mostly=0.99, where="km IS NOT NULL",
                                    config={"tags": ["x"]})]
    assert {s.kind for s in good} == set(CHECK_KINDS)
    for s in good:
        assert validate_check(s) == [], s


def test_an_unknown_kind_names_the_known_ones_and_the_file() -> None:
    [msg] = validate_check(spec("not_nul", "km"))
    assert msg == (f"{ORIGIN}: gold.trips: unknown check 'not_nul' on column km; known checks: "
                   + ", ".join(CHECK_KINDS))


@pytest.mark.parametrize(("check", "expected"), [
    (spec("not_null"), "not_null is a column check"),
    (spec("unique"), "unique needs a column"),
    (spec("accepted_values", "k", values=[]), "accepted_values needs `values: [...]`"),
    (spec("accepted_values", "k", values="a"), "accepted_values needs `values: [...]`"),
    (spec("relationships", "k", field="id"), "relationships needs `to: schema.name`"),
    (spec("relationships", "k", to="devices", field="id"), "`to`: 'devices' is not a relation"),
    (spec("relationships", "k", to="a.b"), "relationships needs `field:`"),
    (spec("accepted_range", "km"), "accepted_range needs `min_value`, `max_value` or both"),
    (spec("accepted_range", "km", min_value=True), "`min_value` must be a number"),
    (spec("expression_is_true"), "expression_is_true needs `expression:`"),
    (spec("row_count"), "row_count needs `min`, `max` or both"),
    (spec("row_count", min=-1), "`min` must be a whole number ≥ 0"),
    (spec("row_count", min=5, max=2), "`min` is above `max`"),
    (spec("row_count", "km", min=1), "row_count is a table check"),
    (spec("row_count", min=1, mostly=0.5), "`mostly` does not apply to row_count"),
    (spec("freshness", warn_after="1h"), "freshness needs `field:`"),
    (spec("freshness", field="ts"), "freshness needs `warn_after`, `error_after` or both"),
    (spec("freshness", field="ts", error_after="soon"), "`error_after`: 'soon' is not an interval"),
    (spec("freshness", field="ts", warn_after={"count": 1, "period": "fortnight"}), "`warn_after`: {"),
    (spec("reconcile", where="id > 1"), "reconcile compares whole tables up to the watermark and takes no `where`"),
    (spec("accepted_range", "km", min_value=0, max_valu=9), "unknown argument(s) max_valu; accepted_range takes"),
    (spec("not_null", "km", mostly=0), "`mostly` must be a share of rows above 0 and at most 1, not 0"),
    (spec("not_null", "km", mostly=1.5), "`mostly` must be a share of rows above 0 and at most 1, not 1.5"),
    (spec("not_null", "km", severity="fatal"), "`severity` must be error or warn, not 'fatal'"),
    (spec("not_null", "km", where="  "), "`where` must be a SQL condition"),
])
def test_problems_name_the_file_the_relation_and_the_check(check: CheckSpec, expected: str) -> None:
    problems = validate_check(check)
    assert problems, check
    assert any(expected in p for p in problems), problems
    for p in problems:
        assert p.startswith(f"{ORIGIN}: gold.trips: {check.name}: ")
        assert p[0].islower() and "\n" not in p


def test_a_relation_without_a_schema_is_a_problem() -> None:
    [msg] = validate_check(CheckSpec("not_null", "trips", "km", origin=ORIGIN))
    assert msg == f"{ORIGIN}: trips: not_null(km): 'trips' is not a relation; write `schema.name` or ref('schema.name')"


# ------------------------------------------------------------------------------------ helpers
def test_ages_in_dbt_shape_or_as_intervals() -> None:
    assert parse_age({"count": 12, "period": "hour"}) == timedelta(hours=12)
    assert parse_age({"count": 2, "period": "days"}) == timedelta(days=2)
    assert parse_age("12 hours") == parse_age("12h") == timedelta(hours=12)
    assert parse_age(90) == timedelta(seconds=90)
    for bad in ({"count": 0, "period": "hour"}, {"period": "hour"}, True, [1]):
        with pytest.raises(ValueError, match="is not an age"):
            parse_age(bad)


def test_relations_in_every_spelling() -> None:
    assert parse_relation("silver.devices") == ("silver", "devices")
    assert parse_relation("ref('silver.devices')") == ("silver", "devices")
    assert parse_relation('ref("silver.devices")') == ("silver", "devices")
    assert parse_relation("source('bronze', 'devices')") == ("bronze", "devices")
    with pytest.raises(ValueError, match="is not a relation"):
        parse_relation("a.b.c")


def test_mostly_is_the_share_that_must_pass() -> None:
    assert passes(0, 0, 1.0) and passes(0, 10, 1.0)
    assert not passes(1, 1000, 1.0)
    assert passes(1, 1000, 0.999)  # exactly the allowance, despite float rounding
    assert not passes(2, 1000, 0.999)
    assert passes(5, 10, 0.5) and not passes(6, 10, 0.5)
