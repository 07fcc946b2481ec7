"""The request signature, checked against a worked example and against the fake platform (whose own
check is written separately), so a signing bug shows as a refused call."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from bronzeline.config.models import TracksolidConfig
from bronzeline.errors import ConfigError
from bronzeline.fleet.jimi_fake import FakePlatform
from bronzeline.sources.tracksolid.client import TracksolidClient
from bronzeline.sources.tracksolid.signing import platform_time, sign

PARAMS = {"method": "jimi.user.device.list", "timestamp": "2024-01-02 03:04:05", "app_key": "k8",
          "sign_method": "md5", "v": "1.0", "format": "json", "target": "acme", "remark": ""}


def test_worked_example() -> None:
    # by hand: secret, then key+value in ascending key order (remark is empty: skipped), then secret
    text = ("s3cret" + "app_keyk8" + "formatjson" + "methodjimi.user.device.list" + "sign_methodmd5"
            + "targetacme" + "timestamp2024-01-02 03:04:05" + "v1.0" + "s3cret")
    expected = hashlib.md5(text.encode()).hexdigest().upper()
    assert sign(PARAMS, "s3cret") == expected
    assert expected == "74C6697F5C306BA0E7F987690D2CC6F1"  # md5sum of the text above, upper-cased
    # a `sign` already in the parameters is not signed; an empty value is as good as absent
    assert sign({**PARAMS, "sign": "X"}, "s3cret") == expected
    assert sign({k: v for k, v in PARAMS.items() if k != "remark"}, "s3cret") == expected
    # the value counts, byte for byte
    assert sign({**PARAMS, "target": "acme "}, "s3cret") != expected


def _post(url: str, params: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, data=urlencode(params).encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = json.loads(answer.read())
    assert isinstance(body, dict)
    return body


def test_the_fake_takes_our_signature_and_refuses_a_wrong_one() -> None:
    with FakePlatform(devices_per_account=3) as fake:
        s = fake.settings
        login = {"method": "jimi.oauth.token.get", "timestamp": platform_time(datetime.now(UTC)),
                 "app_key": s.app_key, "sign_method": "md5", "v": "1.0", "format": "json",
                 "user_id": s.login, "user_pwd_md5": s.accounts[s.login], "expires_in": "7200"}
        good = _post(fake.url, {**login, "sign": sign(login, s.app_secret)})
        assert good["code"] == 0 and isinstance(good["result"], dict) and good["result"]["accessToken"]
        for wrong in (sign(login, s.app_secret).lower(), sign(login, "another secret"),
                      sign({**login, "expires_in": "7100"}, s.app_secret)):
            refused = _post(fake.url, {**login, "sign": wrong})
            assert (refused["code"], refused["message"]) == (1001, "Parameter error: sign is invalid")
        # an empty parameter sent anyway is skipped by both sides
        with_empty = {**login, "remark": ""}
        assert _post(fake.url, {**with_empty, "sign": sign(with_empty, s.app_secret)})["code"] == 0
        # an old timestamp is refused even when signed
        stale = {**login, "timestamp": "2020-01-01 00:00:00"}
        assert _post(fake.url, {**stale, "sign": sign(stale, s.app_secret)})["code"] == 1001


def test_require_tls_refuses_plain_http_off_loopback() -> None:
    base = {"type": "tracksolid", "app_key": "k", "app_secret": "s", "user_id": "u", "password_md5": "p"}
    with pytest.raises(ConfigError, match="plain http"):
        TracksolidClient("jimi", TracksolidConfig(**base, url="http://open.10000track.com/route/rest"))
    TracksolidClient("jimi", TracksolidConfig(**base, url="http://open.10000track.com/route/rest", require_tls=False))
    TracksolidClient("jimi", TracksolidConfig(**base, url="http://127.0.0.1:1/route/rest"))
    TracksolidClient("jimi", TracksolidConfig(**base, url="https://eu-open.tracksolidpro.com/route/rest"))
