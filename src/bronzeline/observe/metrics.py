"""`/metrics`: the run ledger in Prometheus' text format, read afresh at every scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bronzeline import __version__
from bronzeline.observe.api_calls import ApiView
from bronzeline.observe.facts import RUN_STATUSES
from bronzeline.observe.model_facts import CHECK_STATUSES, MODEL_STATUSES, ModelsView
from bronzeline.observe.slots import WAL_STATUSES as SLOT_WAL_STATUSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Facts = Callable[[], list[dict[str, Any]]]  # table_facts for one scrape; raises when the warehouse is down
Models = Callable[[], ModelsView]  # models_view for one scrape
Slots = Callable[[], list[dict[str, Any]]]  # slots_json for one scrape (contacts the cdc sources)
Api = Callable[[], ApiView]  # api_calls.metrics_view for one scrape


class LedgerCollector(Collector):
    def __init__(self, project: str, facts: Facts, models: Models | None = None, slots: Slots | None = None,
                 api: Api | None = None) -> None:
        self.project = project
        self.facts = facts
        self.models = models
        self.slots = slots
        self.api = api

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("bronzeline_info", "bronzeline's version and project", labels=["project", "version"])
        info.add_metric([self.project, __version__], 1)
        yield info
        try:
            rows = self.facts()
            view = self.models() if self.models is not None else ModelsView()
            slots = self.slots() if self.slots is not None else []
            api = self.api() if self.api is not None else ApiView()
            up = 1.0
        except Exception:  # the warehouse is down: say so, and export nothing stale
            rows, view, slots, api, up = [], ModelsView(), [], ApiView(), 0.0
        yield GaugeMetricFamily("bronzeline_up", "1 when the warehouse answered this scrape", value=up)
        yield from table_metrics(rows)
        yield from model_metrics(view)
        yield from slot_metrics(slots)
        yield from api_metrics(api)


def _gauge(name: str, doc: str, rows: list[dict[str, Any]], key: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["table"])
    for row in rows:
        if row.get(key) is not None:
            family.add_metric([row["table"]], float(row[key]))
    return family


def table_metrics(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    yield _gauge("bronzeline_seconds_since_last_load", "seconds since the table's last loaded run finished",
                 rows, "seconds_since_load")
    yield _gauge("bronzeline_watermark_lag_seconds", "age of the watermark (the source-clock bound of the last "
                 "loaded window) for incremental tables; age of the last load for snapshots", rows, "lag_seconds")
    yield _gauge("bronzeline_freshness_limit_seconds", "2 x the table's cadence: verify's freshness limit",
                 rows, "cadence_limit")
    inserted = CounterMetricFamily("bronzeline_rows_inserted", "rows inserted or updated by loaded runs",
                                   labels=["table"])
    skipped = CounterMetricFamily("bronzeline_rows_skipped", "rows skipped as already present by loaded runs",
                                  labels=["table"])
    for row in rows:
        inserted.add_metric([row["table"]], float(row["rows_inserted_total"]))
        skipped.add_metric([row["table"]], float(row["rows_skipped_total"]))
    yield inserted
    yield skipped
    yield _gauge("bronzeline_last_run_rows_inserted", "rows inserted or updated by the last loaded run",
                 rows, "rows_loaded_last_run")
    yield _gauge("bronzeline_last_run_rows_skipped", "rows skipped by the last loaded run", rows,
                 "rows_skipped_last_run")
    runs = GaugeMetricFamily("bronzeline_runs", "runs in the ledger by status", labels=["table", "status"])
    for row in rows:
        for status in RUN_STATUSES:
            runs.add_metric([row["table"], status], float(row["runs"][status]))
    yield runs
    yield _gauge("bronzeline_failed_runs_24h", "failed runs started in the last 24 hours", rows, "failures_24h")
    yield _gauge("bronzeline_pending_files", "complete batches waiting in exports/", rows, "pending_files")
    yield _gauge("bronzeline_incomplete_files", "other files in exports/ (a data file without its manifest, "
                 "temporary or foreign files)", rows, "incomplete_files")
    yield _gauge("bronzeline_last_run_duration_seconds", "duration of the last loaded run", rows, "last_run_seconds")


def model_metrics(view: ModelsView) -> Iterator[Metric]:
    """Per model its latest build; per check (relation, check, column) its latest result."""
    status = GaugeMetricFamily("bronzeline_model_status", "1 for the status of the model's latest build",
                               labels=["model", "status"])
    rows = GaugeMetricFamily("bronzeline_model_rows", "rows of the model's latest successful build", labels=["model"])
    built = GaugeMetricFamily("bronzeline_model_last_built_timestamp_seconds",
                              "when the model was last built successfully (what readers see)", labels=["model"])
    for m in view.models:
        for name in MODEL_STATUSES:
            status.add_metric([m.model, name], float(m.status == name))
        if m.rows is not None:
            rows.add_metric([m.model], float(m.rows))
        if m.last_built_at is not None:
            built.add_metric([m.model], m.last_built_at.timestamp())
    yield status
    yield rows
    yield built
    failing = GaugeMetricFamily("bronzeline_check_failing_rows", "failing rows in the check's latest result",
                                labels=["relation", "check", "column"])
    verdict = GaugeMetricFamily("bronzeline_check_status", "1 for the status of the check's latest result "
                                "(fail: an error check failed; warn: a warn check failed)",
                                labels=["relation", "check", "column", "status"])
    for c in view.checks:
        labels = [c.relation, c.check_name, c.column_name or ""]
        failing.add_metric(labels, float(c.failing_rows))
        for name in CHECK_STATUSES:
            verdict.add_metric([*labels, name], float(c.status == name))
    yield failing
    yield verdict


_SLOT_LABELS = ["slot", "source"]
_SLOT_GAUGES = (
    ("bronzeline_cdc_slot_retained_wal_bytes", "WAL the source keeps for the slot (current position - restart_lsn)",
     "retained_wal_bytes"),
    ("bronzeline_cdc_slot_confirmed_lag_bytes", "WAL not yet applied and confirmed (current position - "
     "confirmed_flush_lsn)", "confirmed_lag_bytes"),
    ("bronzeline_cdc_slot_max_retained_wal_bytes", "cdc.max_retained_wal: verify fails above it",
     "max_retained_wal_bytes"),
    ("bronzeline_cdc_lag_seconds", "now - source commit time of the last applied change", "lag_seconds"),
)


def slot_metrics(slots: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per cdc slot (and its source): health at the source and what the warehouse applied."""
    up = GaugeMetricFamily("bronzeline_cdc_source_up", "1 when the slot's source answered this scrape",
                           labels=_SLOT_LABELS)
    exists = GaugeMetricFamily("bronzeline_cdc_slot_exists", "1 when the slot exists at the source",
                               labels=_SLOT_LABELS)
    active = GaugeMetricFamily("bronzeline_cdc_slot_active", "1 while a consumer reads the slot", labels=_SLOT_LABELS)
    lost = GaugeMetricFamily("bronzeline_cdc_slot_lost", "1 when the slot is missing or invalidated (wal_status "
                             "lost): run `bronzeline resync`", labels=_SLOT_LABELS)
    wal = GaugeMetricFamily("bronzeline_cdc_slot_wal_status", "1 for the slot's wal_status (missing: no slot)",
                            labels=[*_SLOT_LABELS, "wal_status"])
    answered = [s for s in slots if s["exists"] is not None]
    for s in slots:
        up.add_metric([s["slot"], s["source"]], float(s["exists"] is not None))
    for s in answered:
        labels = [s["slot"], s["source"]]
        exists.add_metric(labels, float(s["exists"]))
        active.add_metric(labels, float(bool(s["active"])))
        lost.add_metric(labels, float(not s["exists"] or s["wal_status"] == "lost"))
        current = s["wal_status"] if s["exists"] else "missing"
        for name in (*SLOT_WAL_STATUSES, "missing"):
            wal.add_metric([*labels, name], float(current == name))
    yield from (up, exists, active, lost, wal)
    for name, doc, key in _SLOT_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=_SLOT_LABELS)
        for s in slots:
            if s.get(key) is not None:
                family.add_metric([s["slot"], s["source"]], float(s[key]))
        yield family
    for name, doc, key in (("bronzeline_cdc_last_heartbeat_timestamp_seconds", "the slot's last heartbeat",
                            "last_heartbeat_at"),
                           ("bronzeline_cdc_last_applied_timestamp_seconds", "when the warehouse last applied "
                            "changes from the slot", "last_applied_at")):
        family = GaugeMetricFamily(name, doc, labels=_SLOT_LABELS)
        for s in slots:
            if s.get(key):
                family.add_metric([s["slot"], s["source"]], datetime.fromisoformat(s[key]).timestamp())
        yield family


def api_metrics(api: ApiView) -> Iterator[Metric]:
    """The call log over the last 24 hours (gauges: a window, not counters since start)."""
    calls = GaugeMetricFamily("bronzeline_api_calls_24h", "API calls in the last 24 hours by outcome (error: a code "
                              "other than 0 or no answer; rate_limited: code 1006)",
                              labels=["connection", "method", "outcome"])
    for m in api.methods:
        for outcome, count in (("ok", m.ok), ("error", m.error), ("rate_limited", m.rate_limited)):
            calls.add_metric([m.connection, m.method, outcome], float(count))
    yield calls
    for name, doc, key in (("bronzeline_api_call_seconds_avg", "average API call duration over the last 24 hours",
                            "avg_ms"),
                           ("bronzeline_api_call_seconds_p95", "95th percentile of API call durations over the last "
                            "24 hours", "p95_ms")):
        family = GaugeMetricFamily(name, doc, labels=["connection"])
        for c in api.connections:
            value = getattr(c, key)
            if value is not None:
                family.add_metric([c.connection], value / 1000)
        yield family
    renewals = GaugeMetricFamily("bronzeline_api_token_renewals_24h", "access-token requests and refreshes in the "
                                 "last 24 hours", labels=["connection"])
    rows = GaugeMetricFamily("bronzeline_api_rows_24h", "records returned by API calls in the last 24 hours",
                             labels=["connection"])
    last = GaugeMetricFamily("bronzeline_api_last_call_timestamp_seconds", "when the connection's latest API call "
                             "was made", labels=["connection"])
    for c in api.connections:
        renewals.add_metric([c.connection], float(c.renewals_24h))
        rows.add_metric([c.connection], float(c.rows_24h))
        if c.last_call_at is not None:
            last.add_metric([c.connection], c.last_call_at.timestamp())
    yield from (renewals, rows, last)


def render(project: str, facts: Facts, models: Models | None = None, slots: Slots | None = None,
           api: Api | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(project, lambda: [_with_limit(r) for r in facts()], models, slots, api))
    return generate_latest(registry)


def _with_limit(row: dict[str, Any]) -> dict[str, Any]:
    cadence = row.get("cadence_seconds")
    return {**row, "cadence_limit": 2 * cadence if cadence is not None else None}
