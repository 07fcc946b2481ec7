"""The warehouse side of change data capture: pages of changes applied to bronze in one transaction —
inserts, updates (key changes, composite keys, unchanged TOAST values), deletes, truncates — the history,
replays, and a process killed between the warehouse commit and the slot's advance."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from typing import Any

import pytest

from bronzeline.context import Context
from bronzeline.pipeline.cdc_run import SlotApplier
from bronzeline.sources.cdc.changes import UNCHANGED, Change, Page, Relation, RelationColumn, Value
from bronzeline.warehouse.cdc_control import CdcControl
from tests.integration.cdc_setup import cdc_pipeline, rows, settled_after_kill
from tests.integration.pipeline import Pipeline

DDL = """
CREATE TABLE tracksolid.trips (imei text, day int, note text, body text, PRIMARY KEY (imei, day));
INSERT INTO tracksolid.trips VALUES ('a', 1, 'first', repeat('A', 5000)), ('b', 1, 'first', repeat('B', 5000)),
                                    ('c', 1, 'first', 'C');
"""
YAML = ("  - name: trips\n    from: tracksolid.trips\n    mode: cdc\n    key: [imei, day]\n    history: true\n")
RELATION = Relation(1, "tracksolid", "trips", "d", (
    RelationColumn("imei", 25, -1, True), RelationColumn("day", 23, -1, True),
    RelationColumn("note", 25, -1, False), RelationColumn("body", 25, -1, False)))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def trips(pipeline: Pipeline) -> Any:
    with cdc_pipeline(pipeline, DDL, ["trips"], YAML) as pipe:
        [outcome] = pipe.run()
        assert outcome.status == "loaded", outcome.message
        yield pipe


def change(op: str, lsn: int, seq: int, new: dict[str, Value] | None = None,
           old: dict[str, str | None] | None = None) -> Change:
    return Change(op, "tracksolid", "trips", lsn, NOW, seq, new, old)  # type: ignore[arg-type]


def row(imei: str, day: int, note: str | None, body: Value) -> dict[str, Value]:
    return {"imei": imei, "day": str(day), "note": note, "body": body}


def apply(pipe: Pipeline, changes: list[Change]) -> None:
    page = Page(changes, {("tracksolid", "trips"): RELATION}, max(c.commit_lsn for c in changes), NOW, 1)
    with Context(pipe.config()) as ctx:
        SlotApplier(ctx, "source").apply_page(page, None)


def start_lsn(pipe: Pipeline) -> int:
    with Context(pipe.config()) as ctx:
        return CdcControl(ctx.warehouse, "dwh_control").tables()["trips"].start_lsn


def bronze(pipe: Pipeline) -> list[tuple[Any, ...]]:
    with pipe.wh() as conn:
        return rows(conn, "SELECT imei, day, note, left(body, 3), length(body) FROM bronze.trips ORDER BY 1, 2")


def test_first_load_then_inserts_updates_key_changes_deletes(trips: Pipeline) -> None:
    assert bronze(trips) == [("a", 1, "first", "AAA", 5000), ("b", 1, "first", "BBB", 5000), ("c", 1, "first", "C", 1)]
    at = start_lsn(trips) + 100
    page = [
        change("I", at, 0, row("x", 1, "new", "X" * 3000)),
        change("U", at, 1, row("a", 1, "changed", UNCHANGED)),  # TOAST unchanged: bronze keeps body
        change("U", at, 2, row("b", 2, "moved", UNCHANGED), {"imei": "b", "day": "1"}),  # key change, body in bronze
        change("D", at, 3, None, {"imei": "c", "day": "1"}),
        change("I", at, 4, row("y", 1, "y1", "Y")),
        change("U", at, 5, row("y", 1, "y2", UNCHANGED)),  # filled from the insert of the same page
        change("I", at, 6, row("z", 1, "gone", "Z")),
        change("D", at, 7, None, {"imei": "z", "day": "1"}),
        change("U", at + 50, 0, row("x", 5, "x moved", UNCHANGED), {"imei": "x", "day": "1"}),
    ]
    apply(trips, page)
    expected = [("a", 1, "changed", "AAA", 5000), ("b", 2, "moved", "BBB", 5000), ("x", 5, "x moved", "XXX", 3000),
                ("y", 1, "y2", "Y", 1)]
    assert bronze(trips) == expected
    with trips.wh() as conn:
        history = rows(conn, "SELECT op, seq, imei, day, note, unchanged, old_key FROM bronze.trips__changes "
                             "ORDER BY commit_lsn, seq")
        runs = rows(conn, "SELECT mode, status, rows_extracted, rows_loaded, rows_skipped, rows_deleted, lsn_start, "
                          "lsn_end FROM dwh_control.extract_runs ORDER BY run_id")
        applied = rows(conn, "SELECT applied_lsn FROM dwh_control.cdc_slots")
    assert [h[0] for h in history] == ["I", "U", "U", "D", "I", "U", "I", "D", "U"]
    assert history[1][5] == ["body"]  # unchanged in bronze, not NULL
    assert history[5][5] == []  # the page carried the value: the history shows it
    assert history[2][6] == {"imei": "b", "day": 1}
    assert history[3][2:4] == ("c", 1)
    assert runs[-1][:6] == ("cdc", "loaded", 9, 9, 0, 1)  # c; x and z never reached bronze
    assert runs[-1][6] < runs[-1][7]
    assert applied[0][0] is not None

    # the same page again (a replay): nothing changes, no batch, no run row
    apply(trips, page)
    assert bronze(trips) == expected
    with trips.wh() as conn:
        assert rows(conn, "SELECT count(*) FROM bronze.trips__changes") == [(9,)]
        assert rows(conn, "SELECT count(*) FROM dwh_control.extract_runs") == [(len(runs),)]
    # a page that overlaps what is applied: only the new transaction counts
    apply(trips, [*page, change("I", at + 60, 0, row("w", 1, "w", "W"))])
    with trips.wh() as conn:
        last = rows(conn, "SELECT rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs "
                          "ORDER BY run_id DESC LIMIT 1")
        assert rows(conn, "SELECT count(*) FROM bronze.trips__changes") == [(10,)]
    assert last == [(10, 1, 9)]
    assert bronze(trips) == sorted([*expected, ("w", 1, "w", "W", 1)])
    assert trips.files("exports", "trips") == []


def test_truncate_and_changes_inside_the_snapshot(trips: Pipeline) -> None:
    start = start_lsn(trips)
    # at or below the table's start LSN: already in the snapshot, skipped
    apply(trips, [change("I", start, 0, row("old", 1, "in snapshot", "S"))])
    assert [r[0] for r in bronze(trips)] == ["a", "b", "c"]
    at = start + 10
    apply(trips, [change("U", at, 0, row("a", 1, "before", UNCHANGED)), change("T", at, 1),
                  change("I", at, 2, row("n", 1, "after", "N"))])
    assert bronze(trips) == [("n", 1, "after", "N", 1)]


@pytest.mark.parametrize("point", ["uploaded", "load", "committed", "moving"])
def test_killed_anywhere_then_nothing_lost_nothing_doubled(trips: Pipeline, point: str) -> None:
    with trips.src() as conn:
        conn.execute("INSERT INTO tracksolid.trips SELECT 'k' || i, i, 'n', repeat('K', i) "
                     "FROM generate_series(1, 50) i")
        conn.execute("UPDATE tracksolid.trips SET note = 'u' WHERE day % 3 = 0")
        conn.execute("DELETE FROM tracksolid.trips WHERE day % 7 = 0")
    killed = trips.cli("run", env={"BRONZELINE_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    trips.cli("run", check=True)
    trips.cli("run", check=True)
    history, loaded = settled_after_kill(trips)
    assert history == [("D", 7), ("I", 50), ("U", 16)]  # each change once, whatever the kill
    assert sum(r[2] for r in loaded) == 3 + 50 + 16 + 7  # the snapshot, then each change once
    assert trips.files("exports", "trips") == []
