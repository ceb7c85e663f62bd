"""The hmac connector set up as GitHub, Slack and Shopify sign (their vectors: reference/specs.md §4), and refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from eventbus_hmac import HmacConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SECRET = "a shared secret"

GITHUB: dict[str, object] = {"header": "X-Hub-Signature-256", "prefix": "sha256="}
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SLACK: dict[str, object] = {
    "header": "X-Slack-Signature",
    "prefix": "v0=",
    "signed": "v0:{timestamp}:{body}",
    "timestamp_header": "X-Slack-Request-Timestamp",
    "type": "slack.command",
}
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SHOPIFY: dict[str, object] = {
    "header": "X-Shopify-Hmac-SHA256",
    "encoding": "base64",
    "type_header": "X-Shopify-Topic",
    "id_header": "X-Shopify-Webhook-Id",
    "subject_field": "id",
}

JSON_FIELDS: dict[str, object] = {
    "header": "X-Signature",
    "type_field": "event.type",
    "id_field": "id",
    "subject_field": "items.0.sku",
}
ORDER = json.dumps({"id": 991, "event": {"type": "order/paid"}, "items": [{"sku": "SKU-1"}]}).encode()


def source(options: Mapping[str, object], *secrets: str) -> SourceConfig:
    connector = HmacConnector()
    return SourceConfig("long-tail", "hmac", secrets=secrets or (SECRET,), options=connector.validate_options(options))


def digest(body: bytes, secret: str = SECRET, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).digest()


def post(body: bytes, headers: dict[str, str], content_type: str | None = None) -> InboundRequest:
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    return InboundRequest("POST", "/hooks/long-tail", headers=Headers.of(headers), body=body)


def signed_json(
    body: bytes = ORDER, content_type: str | None = "application/json", headers: Mapping[str, str] | None = None
) -> InboundRequest:
    return post(body, {"X-Signature": digest(body).hex(), **(headers or {})}, content_type)


async def handle(request: InboundRequest, config: SourceConfig, now: datetime = NOW) -> Accepted | Refused:
    result = await HmacConnector().handle(request, config, now)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(request: InboundRequest, config: SourceConfig, now: datetime = NOW) -> Event:
    result = await handle(request, config, now)
    assert isinstance(result, Accepted), result
    (event,) = result.events
    assert result.dedup_key == event.id
    return event


async def refused(
    request: InboundRequest, config: SourceConfig, status: int, field: str, now: datetime = NOW
) -> Refused:
    result = await handle(request, config, now)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


# --- configured as the providers sign -------------------------------------------------------------------------


async def test_configured_as_github_the_documented_vector_verifies() -> None:
    config = source(GITHUB, GITHUB_SECRET)
    event = await accepted(post(b"Hello, World!", {"X-Hub-Signature-256": GITHUB_SIGNATURE}), config)
    assert event.type == "hmac.webhook"  # the default when no type option is set
    assert event.source == "/hooks/long-tail"
    assert event.id == hashlib.sha256(b"Hello, World!").hexdigest()
    assert (event.data, event.datacontenttype) == (b"Hello, World!", None)


async def test_configured_as_slack_the_documented_vector_verifies_within_the_tolerance() -> None:
    config = source(SLACK, SLACK_SECRET)
    headers = {"X-Slack-Signature": SLACK_SIGNATURE, "X-Slack-Request-Timestamp": str(SLACK_TS)}
    request = post(SLACK_BODY, headers, "application/x-www-form-urlencoded")
    slack_now = datetime.fromtimestamp(SLACK_TS, UTC)
    event = await accepted(request, config, slack_now)
    assert event.type == "hmac.slack.command"
    assert (event.data, event.datacontenttype) == (SLACK_BODY, "application/x-www-form-urlencoded")
    stale = await refused(request, config, 401, "X-Slack-Request-Timestamp", slack_now + timedelta(seconds=301))
    assert "301 s old" in stale.reason
    future = await refused(request, config, 401, "X-Slack-Request-Timestamp", slack_now - timedelta(seconds=301))
    assert "future" in future.reason
    replayed = post(SLACK_BODY, {**headers, "X-Slack-Request-Timestamp": str(SLACK_TS + 1)})
    await refused(replayed, config, 401, "X-Slack-Signature", slack_now)


async def test_configured_as_shopify_the_computed_vector_verifies() -> None:
    config = source(SHOPIFY, "shop-secret")
    headers = {
        "X-Shopify-Hmac-SHA256": "plW8VGqq0nDMIEhDqaNNW99asdUCy7EIqLZVcQwtAZ0=",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": "b54557e4",
    }
    event = await accepted(post(b'{"id":1}', headers, "application/json"), config)
    assert (event.type, event.id, event.subject) == ("hmac.orders.create", "b54557e4", "1")
    assert (event.data, event.datacontenttype) == (b'{"id":1}', "application/json")


@pytest.mark.parametrize("algorithm", ["sha1", "sha512"])
async def test_the_other_algorithms_verify(algorithm: str) -> None:
    config = source({"header": "X-Signature", "algorithm": algorithm, "encoding": "base64"})
    signature = base64.b64encode(digest(ORDER, algorithm=algorithm)).decode()
    await accepted(post(ORDER, {"X-Signature": signature}), config)
    sha256 = base64.b64encode(digest(ORDER)).decode()
    await refused(post(ORDER, {"X-Signature": sha256}), config, 401, "X-Signature")


async def test_type_id_and_subject_are_read_from_the_json_body() -> None:
    event = await accepted(signed_json(), source(JSON_FIELDS))
    assert (event.type, event.id, event.subject) == ("hmac.order.paid", "991", "SKU-1")
    assert event.json_data()["id"] == 991


async def test_a_json_body_without_a_content_type_is_read_when_fields_are_configured() -> None:
    event = await accepted(signed_json(content_type=None), source(JSON_FIELDS))
    assert event.datacontenttype == "application/json"


async def test_the_fixed_type_is_the_fallback_of_type_header() -> None:
    config = source({"header": "X-Signature", "type_header": "X-Event", "type": "unknown"})
    assert (await accepted(signed_json(), config)).type == "hmac.unknown"
    assert (await accepted(signed_json(headers={"X-Event": "a/b"}), config)).type == "hmac.a.b"


async def test_both_secrets_verify_during_a_rotation() -> None:
    config = source({"header": "X-Signature"}, "the new secret", SECRET)
    await accepted(signed_json(), config)
    await accepted(post(ORDER, {"X-Signature": digest(ORDER, "the new secret").hex()}), config)


async def test_upper_case_hex_and_prefix_are_accepted() -> None:
    config = source({"header": "X-Signature", "prefix": "sha256="})
    await accepted(post(ORDER, {"X-Signature": "SHA256=" + digest(ORDER).hex().upper()}), config)


# --- refusals -------------------------------------------------------------------------------------------------


async def test_a_missing_signature_header_is_refused() -> None:
    await refused(post(ORDER, {}), source({"header": "X-Signature"}), 401, "X-Signature")


@pytest.mark.parametrize(
    "signature", ["sha1=" + "0" * 64, "sha256=xyz", "sha256=" + "0" * 62, "0" * 64, "sha256=" + "A" * 44]
)
async def test_a_malformed_signature_is_refused(signature: str) -> None:
    result = await refused(
        post(ORDER, {"X-Signature": signature}),
        source({"header": "X-Signature", "prefix": "sha256="}),
        401,
        "X-Signature",
    )
    assert "'sha256=' followed by the HMAC-SHA256 in hex digits" in result.reason


async def test_another_secret_is_refused_without_leaking_anything() -> None:
    config = source({"header": "X-Signature"}, "not the secret")
    result = await refused(signed_json(), config, 401, "X-Signature")
    assert SECRET not in result.reason and digest(ORDER).hex() not in result.reason


async def test_a_flipped_body_byte_is_refused() -> None:
    request = post(ORDER.replace(b"991", b"992"), {"X-Signature": digest(ORDER).hex()})
    await refused(request, source({"header": "X-Signature"}), 401, "X-Signature")


async def test_a_missing_or_malformed_timestamp_is_refused() -> None:
    config = source(SLACK, SLACK_SECRET)
    await refused(post(SLACK_BODY, {"X-Slack-Signature": SLACK_SIGNATURE}), config, 401, "X-Slack-Request-Timestamp")
    malformed = {"X-Slack-Signature": SLACK_SIGNATURE, "X-Slack-Request-Timestamp": "1531420618.0"}
    await refused(post(SLACK_BODY, malformed), config, 401, "X-Slack-Request-Timestamp")


async def test_malformed_json_is_refused() -> None:
    await refused(signed_json(b'{"id": 1'), source({"header": "X-Signature"}), 400, "body")


async def test_invalid_utf8_is_refused_when_the_body_is_json() -> None:
    await refused(signed_json(b'{"id": "\xff"}'), source({"header": "X-Signature"}), 400, "body")


async def test_a_form_body_is_refused_when_fields_are_read() -> None:
    result = await refused(
        signed_json(b"id=1&type=a", "application/x-www-form-urlencoded"), source(JSON_FIELDS), 400, "body"
    )
    assert "not JSON" in result.reason


async def test_a_form_body_sent_as_json_is_refused() -> None:
    await refused(signed_json(b"id=1&type=a"), source({"header": "X-Signature"}), 400, "body")


async def test_a_json_array_is_refused_when_fields_are_read() -> None:
    await refused(signed_json(b"[1]"), source(JSON_FIELDS), 400, "body")


async def test_a_missing_type_header_without_a_fallback_is_refused() -> None:
    await refused(signed_json(), source({"header": "X-Signature", "type_header": "X-Event"}), 400, "X-Event")


async def test_a_type_that_cannot_be_an_event_type_is_refused() -> None:
    body = json.dumps({"id": 1, "event": {"type": "order paid"}}).encode()
    await refused(signed_json(body), source(JSON_FIELDS), 400, "body.event.type")


async def test_a_missing_id_header_is_refused() -> None:
    await refused(signed_json(), source({"header": "X-Signature", "id_header": "X-Delivery"}), 400, "X-Delivery")


async def test_a_missing_id_field_is_refused() -> None:
    await refused(signed_json(b'{"event": {"type": "a"}}'), source(JSON_FIELDS), 400, "body.id")


async def test_invalid_stored_options_are_the_servers_fault() -> None:
    broken = SourceConfig("long-tail", "hmac", secrets=(SECRET,), options={"algorithm": "md5"})
    with pytest.raises(RuntimeError, match="invalid hmac options"):
        await HmacConnector().handle(signed_json(), broken, NOW)


# --- options --------------------------------------------------------------------------------------------------


def test_options_are_normalised_with_defaults() -> None:
    connector = HmacConnector()
    assert connector.validate_options({"header": "X-Signature"}) == {
        "header": "X-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "prefix": "",
        "signed": "{body}",
        "type": "webhook",
    }
    options = connector.validate_options(
        {
            "header": "X-Sig",
            "algorithm": "SHA512",
            "timestamp_header": "X-Ts",
            "signed": "{timestamp}.{body}",
            "type_field": "/data/kind",
        }
    )
    assert options["algorithm"] == "sha512"
    assert options["tolerance"] == 300
    assert options["type_field"] == "data.kind"
    assert "type" not in options
    assert (
        connector.validate_options(
            {"header": "X", "timestamp_header": "T", "signed": "{timestamp}{body}", "tolerance": "600"}
        )["tolerance"]
        == 600
    )
    assert (
        connector.validate_options(
            {"header": "X", "timestamp_header": "T", "signed": "{timestamp}{body}", "tolerance": 60.0}
        )["tolerance"]
        == 60
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "options.header"),
        ({"header": "X Sig"}, "options.header"),
        ({"header": 5}, "options.header"),
        ({"header": "X", "secret": "s"}, "options.secret"),
        ({"header": "X", "algorithm": "md5"}, "options.algorithm"),
        ({"header": "X", "encoding": "base32"}, "options.encoding"),
        ({"header": "X", "signed": "{timestamp}"}, "options.signed"),
        ({"header": "X", "signed": "{body}{nonce}"}, "options.signed"),
        ({"header": "X", "signed": "{body!r}"}, "options.signed"),
        ({"header": "X", "signed": "{body"}, "options.signed"),
        ({"header": "X", "signed": "{timestamp}.{body}"}, "options.signed"),
        ({"header": "X", "tolerance": 300}, "options.tolerance"),
        ({"header": "X", "timestamp_header": "T"}, "options.timestamp_header"),  # an unsigned timestamp
        ({"header": "X", "timestamp_header": "T", "signed": "{timestamp}{body}", "tolerance": 0}, "options.tolerance"),
        (
            {"header": "X", "timestamp_header": "T", "signed": "{timestamp}{body}", "tolerance": "soon"},
            "options.tolerance",
        ),
        (
            {"header": "X", "timestamp_header": "T", "signed": "{timestamp}{body}", "tolerance": True},
            "options.tolerance",
        ),
        ({"header": "X", "type": "a b"}, "options.type"),
        ({"header": "X", "type_header": "T", "type_field": "t"}, "options.type_field"),
        ({"header": "X", "id_header": "I", "id_field": "id"}, "options.id_field"),
        ({"header": "X", "subject_field": "a..b"}, "options.subject_field"),
        ({"header": "X", "prefix": "a\nb"}, "options.prefix"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        HmacConnector().validate_options(options)
    assert caught.value.violations[0].field == field
