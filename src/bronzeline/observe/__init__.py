"""Observability: status, (later) verify, drift, metrics and the status page."""
