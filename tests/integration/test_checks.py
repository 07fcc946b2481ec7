"""Data checks against real PostgreSQL: every kind passing and failing, `mostly`, `where`, severity,
checks that cannot run, samples, the ledger, and `reconcile` against a loaded pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bronzeline.models.checks import run_check, run_checks
from bronzeline.models.outcome import CheckResult
from bronzeline.models.reconcile import reconcile_counter
from bronzeline.models.spec import CheckSpec
from bronzeline.provision import migrate
from bronzeline.warehouse import migrations
from bronzeline.warehouse.model_ledger import ModelLedger
from tests.conftest import Databases
from tests.integration.pipeline import Pipeline
from tests.integration.test_core import setup as setup_pipeline

ORIGIN = "models/gold/trips.yml"
# 22 trips: 1..20 are clean; 21 has no km, an unknown device, an unknown kind and an old end; 22 has
# no device and 5000 km. Plate P1 is on trips 1, 21 and 22.
TRIPS = """
CREATE SCHEMA gold;
CREATE TABLE gold.devices (imei text PRIMARY KEY, seen_at timestamptz NOT NULL);
INSERT INTO gold.devices VALUES ('a', now() - interval '2 days'), ('b', now() - interval '30 hours'),
                                ('c', now() - interval '26 hours');
CREATE TABLE gold.trips (trip_id int PRIMARY KEY, imei text, km numeric, kind text, plate text,
                         ended_at timestamptz NOT NULL);
INSERT INTO gold.trips
SELECT i, (ARRAY['a', 'b', 'c'])[i % 3 + 1], i * 10, CASE WHEN i % 2 = 0 THEN 'work' ELSE 'private' END,
       'P' || i, now() - i * interval '1 minute'
FROM generate_series(1, 20) i;
INSERT INTO gold.trips VALUES (21, 'zz', NULL, 'other', 'P1', now() - interval '1 day'),
                              (22, NULL, 5000, 'work', 'P1', now());
"""


def check(kind: str, column: str | None = None, relation: str = "gold.trips", **args: Any) -> CheckSpec:
    extra = {k: args.pop(k) for k in ("severity", "mostly", "where", "key") if k in args}
    return CheckSpec(kind, relation, column, args, origin=ORIGIN, **extra)


@pytest.fixture
def wh(new_database: Databases) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(new_database(postgis=False), autocommit=True) as conn:
        conn.execute(TRIPS)
        yield conn


# kind -> (a check that passes, a check that fails, its failing rows)
CASES: dict[str, tuple[CheckSpec, CheckSpec, int]] = {
    "not_null": (check("not_null", "kind"), check("not_null", "km"), 1),
    "unique": (check("unique", "trip_id"), check("unique", "plate"), 3),
    "unique_columns": (check("unique", columns=["plate", "trip_id"]), check("unique", columns=["imei", "kind"]), 20),
    "accepted_values": (check("accepted_values", "kind", values=["work", "private", "other"]),
                        check("accepted_values", "kind", values=["work", "private"]), 1),
    # NULL imei (trip 22) is not an orphan
    "relationships": (check("relationships", "imei", "gold.devices", to="ref('gold.trips')", field="imei"),
                      check("relationships", "imei", to="gold.devices", field="imei"), 1),
    "accepted_range": (check("accepted_range", "km", min_value=0),
                       check("accepted_range", "km", min_value=0, max_value=3000), 1),
    "expression_is_true": (check("expression_is_true", expression="km >= 0 AND trip_id > 0"),
                           check("expression_is_true", "km", expression="< 1000"), 1),
    "row_count": (check("row_count", min=1, max=100), check("row_count", min=50), 1),
    "freshness": (check("freshness", field="ended_at", error_after={"count": 1, "period": "hour"}),
                  check("freshness", relation="gold.devices", field="seen_at", warn_after="1 hour",
                        error_after={"count": 1, "period": "day"}), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kind_passes_and_fails(wh: psycopg.Connection[Any], case: str) -> None:
    good, bad, failing = CASES[case]
    ok = run_check(wh, good)
    assert (ok.status, ok.failing_rows, ok.error, ok.sample) == ("pass", 0, None, [])
    res = run_check(wh, bad)
    assert (res.status, res.failing_rows, res.error) == ("fail", failing, None), res
    assert res.blocks and res.sample
    assert res.total_rows == (3 if bad.relation == "gold.devices" else 22)
    # the recorded query is the failing-rows query: run as is, it returns the failing rows
    rows = wh.execute(res.query).fetchall()
    assert len(rows) == {"unique": 1, "unique_columns": 6}.get(case, failing)


def test_mostly_allows_a_share_of_failing_rows(wh: psycopg.Connection[Any]) -> None:
    assert run_check(wh, check("not_null", "km", mostly=0.95)).status == "pass"  # 1 of 22 ≈ 4.5 %
    strict = run_check(wh, check("not_null", "km", mostly=0.99))
    assert (strict.status, strict.failing_rows, strict.total_rows) == ("fail", 1, 22)
    assert run_check(wh, check("accepted_range", "km", max_value=100, mostly=0.5)).status == "pass"  # 11 of 22
    assert run_check(wh, check("accepted_range", "km", max_value=90, mostly=0.5)).status == "fail"  # 12 of 22


def test_where_limits_the_checked_rows_only(wh: psycopg.Connection[Any]) -> None:
    res = run_check(wh, check("accepted_range", "km", max_value=3000, where="imei IS NOT NULL"))
    assert (res.status, res.failing_rows, res.total_rows) == ("pass", 0, 21)
    # gold.devices has no trip_id: the condition must not reach the referenced relation
    res = run_check(wh, check("relationships", "imei", to="gold.devices", field="imei", where="trip_id <= 20"))
    assert (res.status, res.total_rows, res.error) == ("pass", 20, None)
    res = run_check(wh, check("row_count", min=5, where="kind = 'other'"))
    assert (res.status, res.total_rows, res.sample) == ("fail", 1, [{"row_count": 1, "min": 5, "max": None}])


def test_severity_warn_warns_and_never_blocks(wh: psycopg.Connection[Any]) -> None:
    res = run_check(wh, check("not_null", "km", severity="warn"))
    assert (res.status, res.failing_rows, res.blocks) == ("warn", 1, False)
    # freshness past warn_after but not error_after warns whatever the severity
    stale = run_check(wh, check("freshness", relation="gold.devices", field="seen_at", warn_after="1 hour",
                                error_after="3 days"))
    assert (stale.status, stale.failing_rows, stale.blocks) == ("warn", 0, False)
    assert stale.sample[0]["warn_after"] == "1:00:00" and stale.sample[0]["latest"]
    # an empty relation is never fresh
    gone = run_check(wh, check("freshness", field="ended_at", error_after="1 hour", where="false"))
    assert (gone.status, gone.failing_rows, gone.total_rows) == ("fail", 1, 0)


@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_check_that_cannot_run_reports_it_and_the_next_runs(wh: psycopg.Connection[Any],
                                                              in_transaction: bool) -> None:
    specs = [check("expression_is_true", expression="km >>> 0"), check("not_null", "no_such_column"),
             check("accepted_values", "kind", values=["work"], severity="warn"),
             check("expression_is_true", expression="1 / (trip_id - 22) >= 0", severity="warn"),
             check("not_null", "km")]
    if in_transaction:  # e.g. a build's transaction: each check in a savepoint
        with wh.transaction():
            results = run_checks(wh, specs)
            assert wh.execute("SELECT count(*) FROM gold.trips").fetchone() == (22,)
    else:
        results = run_checks(wh, specs)
    bad_op, missing, values, div, ok = results
    assert bad_op.status == "fail" and missing.status == "fail" and div.status == "warn"
    for res in (bad_op, missing, div):
        assert res.error and "\n" not in res.error
        assert res.error.startswith(f"gold.trips: check {res.spec.name} (declared in {ORIGIN}) could not run: ")
        assert res.query  # what was tried
    assert "no_such_column does not exist" in (missing.error or "")
    assert "division by zero" in (div.error or "")
    assert (values.status, values.failing_rows, values.error) == ("warn", 11, None)
    assert (ok.status, ok.failing_rows, ok.error) == ("fail", 1, None)


def test_an_invalid_check_is_an_error_result_naming_its_file(wh: psycopg.Connection[Any]) -> None:
    res = run_check(wh, check("not_nul", "km"))
    assert res.status == "fail" and res.query == ""
    assert res.error == (f"gold.trips: check not_nul(km) (declared in {ORIGIN}) could not run: {ORIGIN}: gold.trips: "
                         "unknown check 'not_nul' on column km; known checks: not_null, unique, accepted_values, "
                         "relationships, accepted_range, expression_is_true, row_count, freshness, reconcile")


def test_samples_hold_failing_keys(wh: psycopg.Connection[Any]) -> None:
    assert run_check(wh, check("not_null", "km", key=("trip_id",))).sample == [{"trip_id": 21, "km": None}]
    assert run_check(wh, check("accepted_range", "km", max_value=3000)).sample == [{"km": 5000}]
    assert run_check(wh, check("unique", "plate")).sample == [{"plate": "P1", "rows": 3}]
    [row] = run_check(wh, check("expression_is_true", expression="km < 1000")).sample  # no key, no column
    assert row["trip_id"] == 22 and row["plate"] == "P1" and row["kind"] == "work"
    many = run_check(wh, check("accepted_values", "kind", values=["none"], key=("trip_id",)))
    assert (many.failing_rows, len(many.sample)) == (22, 10)
    assert set(many.sample[0]) == {"trip_id", "kind"}


def test_a_target_is_checked_and_reported_under_the_relation(wh: psycopg.Connection[Any]) -> None:
    wh.execute("CREATE TABLE gold.__stage_trips AS SELECT * FROM gold.trips WHERE km IS NOT NULL")
    spec = check("not_null", "km")
    res = run_check(wh, spec, target="gold.__stage_trips")
    assert (res.status, res.total_rows, res.spec.relation) == ("pass", 21, "gold.trips")
    assert '"gold"."__stage_trips"' in res.query
    broken = run_check(wh, check("not_null", "nope"), target="gold.__stage_trips")
    assert (broken.error or "").startswith("gold.__stage_trips: check not_null(nope)")


def test_results_are_recorded_in_check_results(wh: psycopg.Connection[Any]) -> None:
    migrations.apply(wh, "dwh_control")
    ledger = ModelLedger(wh, "dwh_control")
    build_id = ledger.start_build("gold.trips", "table")
    specs = [check("not_null", "km", key=("trip_id",)), check("unique", "trip_id"),
             check("accepted_values", "kind", values=["work"], severity="warn"),
             check("expression_is_true", expression="nope")]
    results = run_checks(wh, specs, ledger=ledger, build_id=build_id)
    assert [r.status for r in results] == ["fail", "pass", "warn", "fail"]
    rows = wh.execute("SELECT build_id, check_name, relation, column_name, severity, status, failing_rows, "
                      "total_rows, sample, query, error_message FROM dwh_control.check_results "
                      "ORDER BY result_id").fetchall()
    assert [r[:8] for r in rows] == [
        (build_id, "not_null", "gold.trips", "km", "error", "fail", 1, 22),
        (build_id, "unique", "gold.trips", "trip_id", "error", "pass", 0, 22),
        (build_id, "accepted_values", "gold.trips", "kind", "warn", "warn", 11, 22),
        (build_id, "expression_is_true", "gold.trips", None, "error", "fail", 0, 0)]
    assert rows[0][8] == [{"trip_id": 21, "km": None}] and rows[0][9] == results[0].query
    assert rows[0][10] is None and 'column "nope" does not exist' in rows[3][10]
    latest = {(c.check_name, c.column_name): c.status for c in ledger.latest_checks()}
    assert latest[("not_null", "km")] == "fail"


# ------------------------------------------------------------------------------------ reconcile
def _reconciled(pipeline: Pipeline) -> tuple[CheckResult, ...]:
    with pipeline.context() as ctx, pipeline.wh() as conn:
        counter = reconcile_counter(ctx)
        return tuple(run_checks(conn, [CheckSpec("reconcile", r, origin="models/sources.yml")
                                       for r in ("bronze.position_history", "bronze.devices", "bronze.nothing")],
                                reconcile=counter))


def test_reconcile_compares_bronze_with_the_source_up_to_the_watermark(pipeline: Pipeline) -> None:
    setup_pipeline(pipeline, rows=200)
    with pipeline.context() as ctx:
        migrate(ctx)
    assert [o.status for o in pipeline.run()] == ["loaded", "loaded"]
    with pipeline.src() as conn:  # past the watermark: not loaded yet, not a difference
        conn.execute("INSERT INTO tracksolid.position_history (imei, gps_time) VALUES ('x', now())")
    positions, devices, unknown = _reconciled(pipeline)
    assert (positions.status, positions.failing_rows, positions.total_rows, positions.error) == ("pass", 0, 200, None)
    assert (devices.status, devices.total_rows) == ("pass", 80)
    assert unknown.status == "fail" and unknown.error is not None
    assert unknown.error.startswith("bronze.nothing: check reconcile (declared in models/sources.yml) could not "
                                    "run: bronze.nothing: reconcile works on bronze tables of the config")
    assert "bronze.devices, bronze.position_history" in unknown.error

    with pipeline.wh() as conn:
        conn.execute("DELETE FROM bronze.position_history WHERE id = 7")
        conn.execute("DELETE FROM bronze.devices WHERE imei = '353549000000003'")
    positions, devices, _ = _reconciled(pipeline)
    assert (positions.status, positions.failing_rows, positions.total_rows) == ("fail", 1, 200)
    assert positions.sample == [{"source_rows": 200, "bronze_rows": 199, "difference": -1}]
    assert (devices.status, devices.failing_rows) == ("fail", 1)


def test_reconcile_without_a_counter_or_a_load_fails_clearly(pipeline: Pipeline) -> None:
    setup_pipeline(pipeline, rows=10)
    with pipeline.context() as ctx:
        migrate(ctx)
    with pipeline.wh() as conn:
        res = run_check(conn, CheckSpec("reconcile", "bronze.position_history", severity="warn"))
        assert res.status == "warn" and "run it with `bronzeline build` or `bronzeline test`" in (res.error or "")
    positions, _, _ = _reconciled(pipeline)
    assert positions.status == "fail"
    assert "nothing was loaded yet" in (positions.error or "")
    assert "run `bronzeline run position_history` first" in (positions.error or "")
