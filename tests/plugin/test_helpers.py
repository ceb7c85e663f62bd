"""The connector helpers of `eventbus.plugin`: JSON and form bodies, no options, HMACs over the active secrets."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from eventbus.errors import InvalidArgumentError
from eventbus.plugin import (
    Headers,
    InboundRequest,
    Refused,
    body_text,
    json_body,
    media_type,
    no_options,
    parse_form,
    parse_json,
    signed_by_any,
)


def request(body: bytes = b"{}", content_type: str | None = "application/json") -> InboundRequest:
    headers = Headers.of({"Content-Type": content_type} if content_type is not None else {})
    return InboundRequest("POST", "/hooks/src", headers=headers, body=body)


def refusal(result: object) -> str:
    """The reason of a 400 refusal of the body."""
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (400, "body")
    return result.reason


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, ""),
        ("", ""),
        ("application/json", "application/json"),
        (" Application/JSON ; charset=UTF-8", "application/json"),
        ("application/x-www-form-urlencoded; charset=utf-8", "application/x-www-form-urlencoded"),
    ],
)
def test_media_type_is_the_content_type_without_parameters(content_type: str | None, expected: str) -> None:
    assert media_type(request(content_type=content_type)) == expected


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/json; charset=utf-8", 'application/json; charset="UTF-8"', "a/b; charset=utf8"],
)
def test_body_text_decodes_utf8(content_type: str | None) -> None:
    assert body_text(request("é".encode(), content_type)) == "é"


def test_body_text_refuses_another_charset() -> None:
    reason = refusal(body_text(request(b"{}", "application/json; charset=ISO-8859-1")))
    assert reason == "Content-Type charset 'iso-8859-1' is not supported: send UTF-8"


def test_body_text_refuses_bytes_that_are_not_utf8() -> None:
    assert refusal(body_text(request(b"\xff\xfe"))) == "body is not valid UTF-8"


@pytest.mark.parametrize(("data", "value"), [('{"a": [1]}', {"a": [1]}), (b"[true]", [True]), ("3", 3), ('"x"', "x")])
def test_parse_json_returns_any_json_value(data: str | bytes, value: object) -> None:
    assert parse_json(data) == value


def test_parse_json_refuses_bytes_that_are_not_utf8() -> None:
    assert refusal(parse_json(b'"\xff"')) == "body is not valid UTF-8"


@pytest.mark.parametrize("data", ["{nope", "", '{"a": 1} trailing', b"\xef\xbb\xbf{}".decode()])
def test_parse_json_refuses_malformed_json(data: str) -> None:
    assert refusal(parse_json(data)).startswith("body is not valid JSON: ")


def test_parse_json_refuses_nesting_too_deep() -> None:
    assert refusal(parse_json("[" * 200_000 + "]" * 200_000)) == "body is not valid JSON: nested too deeply"


def test_parse_form_keeps_order_repeats_and_blank_values() -> None:
    pairs = parse_form("command=%2Fdeploy&text=&a=1&a=2&name=J%C3%BCrgen+X")
    assert pairs == [("command", "/deploy"), ("text", ""), ("a", "1"), ("a", "2"), ("name", "Jürgen X")]


def test_parse_form_refuses_escapes_that_are_not_utf8() -> None:
    assert refusal(parse_form("payload=%ff")).startswith("form body cannot be parsed: ")


def test_parse_form_refuses_more_than_a_thousand_fields() -> None:
    assert parse_form("&".join(["a=1"] * 1000)) == [("a", "1")] * 1000
    assert refusal(parse_form("&".join(["a=1"] * 1001))).startswith("form body cannot be parsed: ")


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/json", "application/cloudevents+json; charset=utf-8"]
)
def test_json_body_reads_a_json_body(content_type: str | None) -> None:
    assert json_body(request(b'{"id": 1}', content_type)) == {"id": 1}


def test_json_body_refuses_another_content_type_with_the_hint() -> None:
    reason = refusal(json_body(request(b"{}", "text/plain; charset=utf-8")))
    assert reason == "Content-Type 'text/plain' is not supported: send application/json"
    reason = refusal(json_body(request(b"{}", "application/XML"), hint="subscribe the webhook in JSON format"))
    assert reason == "Content-Type 'application/xml' is not supported: subscribe the webhook in JSON format"


def test_json_body_checks_the_content_type_before_the_charset_and_the_bytes() -> None:
    assert "'text/plain'" in refusal(json_body(request(b"\xff", "text/plain; charset=latin-1")))
    assert "charset 'latin-1'" in refusal(json_body(request(b"\xff", "application/json; charset=latin-1")))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff{}", "body is not valid UTF-8"),
        (b"[1,]", "body is not valid JSON: Expecting value: line 1 column 4 (char 3)"),
        (b"[" * 200_000, "body is not valid JSON: nested too deeply"),
    ],
)
def test_json_body_refuses_a_body_that_is_not_json(body: bytes, reason: str) -> None:
    assert refusal(json_body(request(body))) == reason


def test_no_options_takes_none() -> None:
    assert no_options("acme", {}) == {}
    with pytest.raises(InvalidArgumentError) as raised:
        no_options("acme", {"zeta": 1, "alpha": True})
    assert raised.value.message == "options.alpha: unknown option: the acme connector takes none"
    assert [(v.field, v.detail) for v in raised.value.violations] == [
        ("options.alpha", "unknown option: the acme connector takes none")
    ]


SECRETS = ("new-secret", "old-secret")
MESSAGE = b"1700000000.{}"


def mac(secret: str, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), MESSAGE, getattr(hashlib, algorithm)).digest()


def test_signed_by_any_compares_raw_digests_and_lowercase_hex() -> None:
    assert signed_by_any(SECRETS, MESSAGE, [mac("new-secret")])
    assert signed_by_any(SECRETS, MESSAGE, [mac("new-secret").hex()])
    assert not signed_by_any(SECRETS, MESSAGE, [mac("new-secret").hex().upper()])
    assert not signed_by_any(SECRETS, MESSAGE, [mac("new-secret").hex().encode()])  # bytes are the raw digest


def test_signed_by_any_accepts_either_secret_of_a_rotation_and_any_signature() -> None:
    assert signed_by_any(SECRETS, MESSAGE, [mac("old-secret")])
    assert signed_by_any(SECRETS, MESSAGE, (s for s in ["00" * 32, "not hex", mac("old-secret").hex()]))
    assert signed_by_any(["sécret"], MESSAGE, [mac("sécret")])  # the secret is used as UTF-8


def test_signed_by_any_refuses_the_wrong_secret_message_or_algorithm() -> None:
    assert not signed_by_any(SECRETS, MESSAGE, [mac("other")])
    assert not signed_by_any(SECRETS, MESSAGE + b" ", [mac("new-secret")])
    assert not signed_by_any(SECRETS, MESSAGE, [mac("new-secret", "sha1")])
    assert not signed_by_any(SECRETS, MESSAGE, [])
    assert not signed_by_any((), MESSAGE, [mac("new-secret")])


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_signed_by_any_takes_a_hashlib_algorithm(algorithm: str) -> None:
    assert signed_by_any(SECRETS, MESSAGE, [mac("old-secret", algorithm)], algorithm=algorithm)
