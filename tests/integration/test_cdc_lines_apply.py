"""Change lines applied by their net result per key in the warehouse: unchanged TOAST values filled from the
page or kept from bronze (never NULL), values that need COPY escaping, the planner taken for a key change
that carries an unchanged value, and pages read ahead of the apply, killed anywhere."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from bronzeline.sources.cdc.changes import UNCHANGED
from tests.integration.cdc_setup import cdc_pipeline, rows, settled_after_kill
from tests.integration.pipeline import Pipeline, table_digest
from tests.integration.test_cdc_apply import DDL, YAML, apply, bronze, change, row, start_lsn


@pytest.fixture
def trips(pipeline: Pipeline, request: Any) -> Any:
    with cdc_pipeline(pipeline, DDL, ["trips"], YAML, getattr(request, "param", "")) as pipe:
        [outcome] = pipe.run()
        assert outcome.status == "loaded", outcome.message
        yield pipe


def layouts(pipe: Pipeline) -> list[str | None]:
    """The layout of each processed change batch, in run order."""
    names = sorted((n for n in pipe.files("processed", "trips") if n.endswith(".manifest.json")),
                   key=lambda n: int(n.split("_")[-1].split(".")[0]))
    extras = [json.loads((pipe.blob / "processed" / "trips" / n).read_text())["extra"] for n in names]
    return [e.get("layout") for e in extras if e.get("kind") == "changes"]


def test_net_result_per_key_fills_unchanged_values_and_never_nulls_them(trips: Pipeline) -> None:
    at = start_lsn(trips) + 100
    page = [
        change("I", at, 0, row("x", 1, "new", "X" * 3000)),
        change("U", at, 1, row("x", 1, "x2", UNCHANGED)),  # filled from the insert in the page
        change("U", at, 2, row("x", 1, "x3", UNCHANGED)),  # still the insert's value
        change("U", at, 3, row("a", 1, "a2", UNCHANGED)),  # only bronze has it: kept
        change("U", at, 4, row("a", 1, "a3", UNCHANGED)),
        change("U", at, 5, row("c", 2, "c moved", "C2"), {"imei": "c", "day": "1"}),  # a key change, all values
        change("I", at, 6, row("z", 1, "gone", "Z")),
        change("D", at, 7, None, {"imei": "z", "day": "1"}),
        change("D", at, 8, None, {"imei": "b", "day": "1"}),
        change("U", at + 10, 0, row("q", 1, "never loaded", UNCHANGED)),  # no row anywhere: not inserted
    ]
    apply(trips, page)
    assert layouts(trips) == ["lines"]
    assert bronze(trips) == [("a", 1, "a3", "AAA", 5000), ("c", 2, "c moved", "C2", 2),
                             ("x", 1, "x3", "XXX", 3000)]
    with trips.wh() as conn:
        history = rows(conn, "SELECT op, seq, imei, note, length(body), unchanged, old_key "
                             "FROM bronze.trips__changes ORDER BY commit_lsn, seq")
        run = rows(conn, "SELECT rows_extracted, rows_loaded, rows_skipped, rows_deleted, lsn_start < lsn_end "
                         "FROM dwh_control.extract_runs ORDER BY run_id DESC LIMIT 1")
    assert [h[0] for h in history] == ["I", "U", "U", "U", "U", "U", "I", "D", "D", "U"]
    assert history[1][4:6] == (3000, []) and history[2][4:6] == (3000, [])  # the history shows the real value
    assert history[3][4:6] == (None, ["body"]) and history[5][6] == {"imei": "c", "day": 1}
    assert history[8][2] == "b" and history[8][6] == {"imei": "b", "day": 1}
    assert run == [(10, 10, 0, 2, True)]  # c's old key and b; z never reached bronze

    # a replay of part of it, with one new transaction: only that one counts
    apply(trips, [*page[:3], change("U", at + 20, 0, row("x", 1, "x4", UNCHANGED))])
    assert bronze(trips)[-1] == ("x", 1, "x4", "XXX", 3000)
    with trips.wh() as conn:
        assert rows(conn, "SELECT rows_extracted, rows_loaded, rows_skipped FROM dwh_control.extract_runs "
                          "ORDER BY run_id DESC LIMIT 1") == [(4, 1, 3)]
        assert rows(conn, "SELECT count(*) FROM bronze.trips__changes") == [(11,)]


def test_truncate_in_a_page_of_lines(trips: Pipeline) -> None:
    at = start_lsn(trips) + 10
    apply(trips, [change("I", at, 0, row("k", 1, "k", "K")), change("T", at, 1),
                  change("I", at, 2, row("n", 1, "after", "N")), change("U", at, 3, row("n", 1, "n2", UNCHANGED)),
                  change("U", at, 4, row("a", 1, "a2", UNCHANGED))])  # a is gone with the truncate
    assert layouts(trips) == ["lines"]
    assert bronze(trips) == [("n", 1, "n2", "N", 1)]


def test_values_needing_escapes_and_a_key_change_with_toast_through_the_slot(trips: Pipeline) -> None:
    with trips.src() as conn:
        conn.execute("ALTER TABLE tracksolid.trips ALTER COLUMN body SET STORAGE EXTERNAL")  # out of line
        conn.execute("INSERT INTO tracksolid.trips VALUES ('t\tab', 1, E'line\\nbreak\\r', E'back\\\\slash \\\\N'), "
                     "('東京', 2, 'naïve — 🚚', ''), ('nul', 3, NULL, E'\\\\.'), "
                     "('big', 1, 'b', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i))")
        conn.execute("UPDATE tracksolid.trips SET note = 'renamed' WHERE imei = 'big'")  # body unchanged
    trips.cli("run", check=True)
    with trips.src() as conn:
        conn.execute("UPDATE tracksolid.trips SET day = 9 WHERE imei = 'big'")  # a key change, body unchanged
    trips.cli("run", check=True)
    with trips.src() as src, trips.wh() as wh:
        assert table_digest(src, "tracksolid.trips") == table_digest(wh, "bronze.trips")
        assert rows(wh, "SELECT length(body) FROM bronze.trips WHERE imei = 'big'") == [(6400,)]
    assert layouts(trips) == ["lines", None]  # the key change carrying an unchanged value: the planner's file


@pytest.mark.parametrize("trips", ["  page_changes: 7\n"], indirect=True)
@pytest.mark.parametrize("point", ["uploaded", "load", "committed"])
def test_pages_read_ahead_killed_anywhere_then_exactly_once(trips: Pipeline, point: str) -> None:
    with trips.src() as conn:
        for i in range(12):  # 12 transactions of 2 or 3 changes: pages of 3 transactions, read one ahead
            with conn.transaction():
                conn.execute("INSERT INTO tracksolid.trips VALUES (%s, %s, 'n', 'body')", (f"r{i}", i))
                conn.execute("UPDATE tracksolid.trips SET note = 'u' WHERE imei = %s", (f"r{i}",))
                conn.execute("DELETE FROM tracksolid.trips WHERE imei = %s AND %s %% 3 = 0", (f"r{i}", i))
    killed = trips.cli("run", env={"BRONZELINE_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    trips.cli("run", check=True)
    history, loaded = settled_after_kill(trips)
    assert history == [("D", 4), ("I", 12), ("U", 12)]
    assert sum(r[2] for r in loaded) == 3 + 28 and len(loaded) >= 1 + 4  # the snapshot, then pages of ~7
