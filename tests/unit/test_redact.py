"""Secrets stay secret: redact() and safe_dsn() mask DSN passwords and listed secrets."""

from __future__ import annotations

import pytest

from bronzeline.redact import dsn_password, redact, safe_dsn

SECRET = "Pw9f8e7d6c5b4a"


@pytest.mark.parametrize("text", [
    f"host=db.example port=5432 dbname=ops user=reader password={SECRET}",
    f"password={SECRET} host=db.example",
    f"host=db.example password = {SECRET} user=reader",
    f"host=db.example PASSWORD={SECRET}",
    f"host=db.example password='{SECRET}' user=reader",
    f"cannot connect (dsn: host=db password={SECRET}); check it",
    f"export PGPASSWORD={SECRET}",
])
def test_key_value_passwords_are_masked(text: str) -> None:
    out = redact(text, [])
    assert SECRET not in out
    assert "***" in out
    assert "host=db" in out or "PGPASSWORD" in out  # the rest of the text stays


def test_key_value_mask_keeps_the_other_parameters() -> None:
    out = redact(f"host=db.example password={SECRET} user=reader", [])
    assert out == "host=db.example password=*** user=reader"


def test_quoted_password_with_spaces_and_escaped_quotes() -> None:
    dsn = r"host=db password='a b\' c d' user=reader"
    out = redact(dsn, [])
    assert out == "host=db password=*** user=reader"
    assert "b\\'" not in out and " c d" not in out


@pytest.mark.parametrize(("url", "expected"), [
    (f"postgresql://reader:{SECRET}@db.example:5432/ops",
     "postgresql://reader:***@db.example:5432/ops"),
    (f"postgres://reader:{SECRET}@db.example/ops?sslmode=require",
     "postgres://reader:***@db.example/ops?sslmode=require"),
    (f"failed: postgresql://u:{SECRET}@h/db refused", "failed: postgresql://u:***@h/db refused"),
    ("postgresql://u:p%40ss%3Aw0rd@h/db", "postgresql://u:***@h/db"),
    (f"postgresql://:{SECRET}@h/db", "postgresql://:***@h/db"),
])
def test_url_passwords_are_masked(url: str, expected: str) -> None:
    assert redact(url, []) == expected


def test_url_without_password_is_unchanged() -> None:
    for text in ("postgresql://reader@db.example:5432/ops", "postgresql://db.example/ops",
                 "host=db.example user=reader dbname=ops"):
        assert redact(text, []) == text


def test_several_passwords_in_one_text() -> None:
    text = (f"source postgresql://a:{SECRET}@h1/db and warehouse host=h2 password={SECRET}x2 "
            f"and again postgresql://b:other{SECRET}@h3/db")
    out = redact(text, [])
    assert SECRET not in out
    assert out.count("***") == 3


def test_listed_secrets_are_masked_anywhere() -> None:
    token = "AKIAEXAMPLEKEY123"
    text = f"s3 said: key {token} is not valid (token={token}); also {SECRET}"
    out = redact(text, [token, SECRET, None, ""])
    assert token not in out and SECRET not in out
    assert out.count("***") == 3
    assert out.startswith("s3 said: key *** is not valid")


def test_listed_secret_inside_other_text_and_multiline() -> None:
    out = redact(f"line one\nFATAL: bad value '{SECRET}'\nline three", [SECRET])
    assert out == "line one\nFATAL: bad value '***'\nline three"


def test_no_secrets_no_change() -> None:
    text = "error: position_history: loaded 10 of 10 rows"
    assert redact(text, []) == text
    assert redact(text, [None, ""]) == text


def test_safe_dsn() -> None:
    assert safe_dsn(f"host=db user=reader password={SECRET} dbname=ops") == \
        "host=db user=reader password=*** dbname=ops"
    assert safe_dsn(f"postgresql://reader:{SECRET}@db/ops") == "postgresql://reader:***@db/ops"
    assert safe_dsn("host=db user=reader dbname=ops") == "host=db user=reader dbname=ops"


@pytest.mark.parametrize(("dsn", "password"), [
    (f"host=db password={SECRET}", SECRET),
    (f"postgresql://reader:{SECRET}@db/ops", SECRET),
    ("postgresql://reader:p%40ss@db/ops", "p@ss"),
    (r"host=db password='with space'", "with space"),
    ("host=db user=reader", None),
    ("this is = not a dsn '", None),
])
def test_dsn_password(dsn: str, password: str | None) -> None:
    assert dsn_password(dsn) == password


def test_decoded_url_password_is_masked_when_listed() -> None:
    # the config lists the decoded password; a message may carry it decoded
    dsn = "postgresql://reader:p%40ss%21word@db/ops"
    secret = dsn_password(dsn)
    assert secret == "p@ss!word"
    assert secret not in redact(f"authentication failed for password {secret}", [secret])

