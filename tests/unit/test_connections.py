"""TLS policy and secret-free connection errors, decided before any packet leaves the machine."""

from __future__ import annotations

import pytest

from bronzeline.config.models import ConnectionConfig
from bronzeline.connections import connect, is_loopback
from bronzeline.errors import SourceError


@pytest.mark.parametrize("host", ["", "localhost", "127.0.0.1", "127.8.9.1", "::1", "/var/run/postgresql"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "db.example.org", "192.168.0.5"])
def test_remote_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_plain_text_to_a_remote_host_is_refused_before_connecting() -> None:
    cfg = ConnectionConfig(dsn="host=10.255.255.1 dbname=x user=u password=s3cr3t-pw sslmode=disable")
    with pytest.raises(SourceError) as err:
        connect("source", cfg, SourceError)
    assert "sslmode=require" in str(err.value) and "require_tls: false" in str(err.value)
    assert "s3cr3t-pw" not in str(err.value)


def test_an_unparseable_dsn_names_no_secret() -> None:
    cfg = ConnectionConfig(dsn="host=x password=two words")
    with pytest.raises(SourceError) as err:
        connect("source", cfg, SourceError)
    assert "not valid" in str(err.value) and "words" not in str(err.value)
