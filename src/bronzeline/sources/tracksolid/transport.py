"""One keep-alive HTTP(S) connection to the platform's URL (stdlib http.client: urllib closes the
connection after every request, and a poll makes many small calls)."""

from __future__ import annotations

import http.client
import ipaddress
import ssl
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

# A reused connection the server already closed fails like this on the next request: reconnect once.
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpReply:
    def __init__(self, status: int, body: bytes, date: str | None) -> None:
        self.status, self.body = status, body
        self.date: datetime | None = None
        if date:
            try:
                self.date = parsedate_to_datetime(date)
            except (TypeError, ValueError):
                self.date = None


class Transport:
    def __init__(self, url: str, timeout: float) -> None:
        split = urlsplit(url)
        self.https = split.scheme == "https"
        self.host = split.hostname or ""
        self.port = split.port
        self.path = (split.path or "/") + (f"?{split.query}" if split.query else "")
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post(self, body: bytes) -> HttpReply:
        """POST a form body; OSError or http.client.HTTPException when no answer could be read."""
        while True:
            fresh = self._conn is None
            conn = self._conn = self._conn or self._open()
            try:
                conn.request("POST", self.path, body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
                answer = conn.getresponse()
                payload = answer.read()
            except _STALE:
                self.close()
                if fresh:
                    raise
                continue  # the kept-alive connection had gone stale: once more on a new one
            except (OSError, http.client.HTTPException):
                self.close()
                raise
            if answer.will_close:
                self.close()
            return HttpReply(answer.status, payload, answer.getheader("Date"))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
