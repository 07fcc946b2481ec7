"""One line of an API or push batch file (JSON lines): the vendor's record as it came, the call (or push) it
came from without secrets, and when it was fetched. Batch files keep these lines as the raw audit trail."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class ApiRecord:
    record: Any  # the vendor's record (normally a dict); anything JSON, even a string that did not parse
    # e.g. {"method": "jimi.device.track.list", "target": "acme", "params": {...}}; a push carries
    # {"path": "/pushgps", "push_id": "<unique per acknowledged push>", "item": <index in data_list>}, which
    # makes its raw row's id: a push streamed into two batches (a crash between load and cleanup) is kept once.
    call: dict[str, Any]
    fetched_at: datetime  # aware, UTC
    error: str | None = None  # set when the record is known bad before mapping (a push body that is not JSON)

    def to_line(self) -> bytes:
        """The record as one JSON line (keys sorted, ASCII-safe, newline-terminated)."""
        body: dict[str, Any] = {"record": self.record, "call": self.call,
                                "fetched_at": self.fetched_at.astimezone(UTC).isoformat()}
        if self.error is not None:
            body["error"] = self.error
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> ApiRecord:
        """Read one line back; ValueError when it is not a line this module wrote."""
        body = json.loads(line)
        if not isinstance(body, dict) or "record" not in body or "fetched_at" not in body:
            raise ValueError("not a bronzeline API record line")
        return cls(body["record"], dict(body.get("call") or {}), datetime.fromisoformat(body["fetched_at"]),
                   body.get("error"))
