"""The receiver's Prometheus metrics, in a registry of its own (`/metrics` of `bronzeline receive`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("bronzeline_push_received", "pushes that reached a push path, by endpoint",
                                ["endpoint"], registry=r)
        self.rejected = Counter("bronzeline_push_rejected", "pushes refused and not stored, by reason "
                                "(unauthorized, too_large, unknown_path, not_stored)", ["reason"], registry=r)
        self.spooled = Counter("bronzeline_push_spooled", "pushes fsync'd to the spool and acknowledged, by endpoint",
                               ["endpoint"], registry=r)
        self.malformed = Counter("bronzeline_push_malformed", "acknowledged pushes whose body is malformed (kept "
                                 "in raw with their error), by endpoint", ["endpoint"], registry=r)
        self.loaded = Counter("bronzeline_push_loaded_records", "pushed records put into bronze by this receiver's "
                              "flushes (extracted into loaded batches), by table", ["table"], registry=r)
        self.flushes = Counter("bronzeline_push_flushes", "flushes of the push tables, by result", ["result"],
                               registry=r)
        self.flush_failures = Counter("bronzeline_push_flush_failures", "push table runs that failed in a flush "
                                      "(the pushes stay in the spool for the next one), by table", ["table"],
                                      registry=r)
        self.ack_seconds = Histogram("bronzeline_push_ack_seconds", "time from a push's arrival to its "
                                     "acknowledgement (after the fsync)", buckets=_ACK_BUCKETS, registry=r)
        self.commit_size = Histogram("bronzeline_push_group_commit_size", "pushes made durable by one fsync",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)

    def on_commit(self, entries: int, seconds: float) -> None:
        if entries:
            self.commit_size.observe(entries)

    def render(self) -> bytes:
        return generate_latest(self.registry)
