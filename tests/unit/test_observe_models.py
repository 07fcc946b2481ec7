"""The models section from given facts: graph layers, the SVG's colours and arrows, the card, /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from bronzeline.config.models import Config
from bronzeline.observe import metrics, model_page
from bronzeline.observe.model_facts import ModelGraph, ModelStatus, ModelsView
from bronzeline.warehouse.model_ledger import CheckRecord

CONFIG = Config.model_validate({
    "project": "fleet", "timezone": "Africa/Nairobi",
    "connections": {"source": {"dsn": "host=/tmp"}, "warehouse": {"dsn": "host=/tmp"}}, "blob": {"url": "file://./b"},
    "tables": [{"name": "ph", "from": "s.ph", "watermark": "t", "key": ["id"]}], "models": {}})
AT = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
# silver.trips and silver.positions read bronze; gold.daily reads both; reporting.v reads gold.daily
GRAPH = ModelGraph(
    {"silver.positions": "view", "silver.trips": "table", "gold.daily": "incremental", "reporting.v": "matview"},
    {"silver.positions": frozenset({"bronze.position_history"}), "silver.trips": frozenset({"bronze.trips"}),
     "gold.daily": frozenset({"silver.trips", "silver.positions"}), "reporting.v": frozenset({"gold.daily"})})
STATUS = [ModelStatus("silver.positions", "view", "built", AT, 120, 0, 0),
          ModelStatus("silver.trips", "table", "failed", AT, 40, 1, 0, "not_null(km): 2 failing rows"),
          ModelStatus("gold.daily", "incremental", "blocked", AT, 7, 0, 0, "blocked by silver.trips")]
CHECKS = [CheckRecord(1, 1, "not_null", "silver.trips", "km", "error", "fail", 2, 40, [], None, AT),
          CheckRecord(2, 2, "row_count", "silver.positions", None, "warn", "warn", 0, 120, [], None, AT),
          CheckRecord(3, None, "accepted_range", "bronze.position_history", "speed", "error", "pass", 0, 999, [],
                      None, AT)]


def test_layers_put_each_model_right_of_what_it_reads() -> None:
    layers = model_page.layers(GRAPH)
    assert layers == [["bronze.position_history", "bronze.trips"], ["silver.positions", "silver.trips"],
                      ["gold.daily"], ["reporting.v"]]


def test_a_cycle_does_not_hang_the_picture() -> None:
    graph = ModelGraph({"a.x": "view", "a.y": "view"}, {"a.x": frozenset({"a.y"}), "a.y": frozenset({"a.x"})})
    assert sorted(n for layer in model_page.layers(graph) for n in layer) == ["a.x", "a.y"]


def test_svg_colours_states_and_draws_an_arrow_per_dependency() -> None:
    svg = model_page.svg(GRAPH, STATUS)
    state = {model: cls for cls, model in re.findall(r'<g class="node (\w+)" data-model="([\w.]+)"', svg)}
    assert state == {
        "silver.positions": "built", "silver.trips": "failed", "gold.daily": "blocked", "reporting.v": "never",
        "bronze.position_history": "source", "bronze.trips": "source"}
    trips = svg[svg.index('data-model="silver.trips"'):]
    assert 'fill="#fee2e2" stroke="#dc2626"' in trips[:trips.index("</g>")]
    assert "not_null(km): 2 failing rows" in trips[:trips.index("</g>")]  # the tooltip says why
    edges = re.findall(r'<path class="edge( bad)?" data-from="([\w.]+)" data-to="([\w.]+)"', svg)
    assert sorted((a, b, bool(bad)) for bad, a, b in edges) == [
        ("bronze.position_history", "silver.positions", False), ("bronze.trips", "silver.trips", False),
        ("gold.daily", "reporting.v", True), ("silver.positions", "gold.daily", False),
        ("silver.trips", "gold.daily", True)]
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in svg
    assert model_page.svg(ModelGraph({}, {}), []) == ""


def test_the_card_lists_models_with_checks_and_source_checks() -> None:
    view = ModelsView(STATUS, CHECKS, GRAPH)
    html = model_page.section(CONFIG, view)
    assert '<svg class="model-graph"' in html
    assert [m for m in re.findall(r'<tr class="model [\w-]+"><td><b>([\w.]+)</b>', html)] == list(GRAPH.materialized)
    assert "never built" in html and "not_null(km)" in html and "2 of 40 failing" in html
    assert "bronze.position_history" in html and "accepted_range(speed)" in html
    assert model_page.summary(view) == "2 model(s) failed or blocked · 1 check(s) failing"
    assert model_page.section(CONFIG.model_copy(update={"models": None}), view) == ""
    broken = model_page.section(CONFIG, ModelsView(STATUS, [], None, "models/x.sql: <bad>"))
    assert "models/x.sql: &lt;bad&gt;" in broken and "<svg" not in broken and "silver.trips" in broken


def test_metrics_per_model_and_per_check() -> None:
    body = metrics.render("fleet", lambda: [], lambda: ModelsView(STATUS, CHECKS, GRAPH)).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("bronzeline_up", ())] == 1
    assert samples[("bronzeline_model_status", (("model", "silver.trips"), ("status", "failed")))] == 1
    assert samples[("bronzeline_model_status", (("model", "silver.trips"), ("status", "built")))] == 0
    assert samples[("bronzeline_model_rows", (("model", "gold.daily"),))] == 7
    assert samples[("bronzeline_model_last_built_timestamp_seconds", (("model", "gold.daily"),))] == AT.timestamp()
    labels = (("check", "row_count"), ("column", ""), ("relation", "silver.positions"))
    assert samples[("bronzeline_check_failing_rows", labels)] == 0
    assert samples[("bronzeline_check_status", (*labels[:3], ("status", "warn")))] == 1
    assert samples[("bronzeline_check_status", (("check", "not_null"), ("column", "km"),
                                                ("relation", "silver.trips"), ("status", "fail")))] == 1


def test_metrics_export_no_model_when_the_warehouse_is_down() -> None:
    def down() -> ModelsView:
        raise OSError("down")

    body = metrics.render("fleet", lambda: [], down).decode()
    assert "bronzeline_up 0.0" in body and "bronzeline_model_status{" not in body

