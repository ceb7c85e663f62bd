"""The standardwebhooks connector against the official vectors (reference/specs.md §1.8) and every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from eventbus_standardwebhooks import StandardWebhooksConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig
from eventbus.signing import generate_secret, sign_v1

# Vector A (official, v1) and B (official, v1a) share id, timestamp and payload.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
SIGNATURE_A = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SIGNATURE_B = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
PUBLIC_KEY_B = "whpk_ZlN4eg7dSSqi0moX9hQUk3orrOouK3QVQSlJa248c/g="
INVALID_A = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
# Vector C (computed with secret A over the spec's minified example).
MSG_ID_C = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
TIMESTAMP_C = 1674087231
PAYLOAD_C = (
    b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",'
    b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
)
SIGNATURE_C = "v1,ARw42xaAApl/nxRo+iPGYwSaMQaOwMo2eyH5JBRA+bQ="

NOW = datetime.fromtimestamp(TIMESTAMP, UTC)
NOW_C = datetime.fromtimestamp(TIMESTAMP_C, UTC)


def source(*secrets: str, **options: object) -> SourceConfig:
    return SourceConfig("sw", "standardwebhooks", secrets=secrets or (SECRET,), options=options)


def message(
    body: bytes = PAYLOAD,
    *,
    signature: str | None = SIGNATURE_A,
    msg_id: str | None = MSG_ID,
    timestamp: int | str | None = TIMESTAMP,
    content_type: str | None = "application/json",
) -> InboundRequest:
    headers: dict[str, str] = {}
    if msg_id is not None:
        headers["webhook-id"] = msg_id
    if timestamp is not None:
        headers["webhook-timestamp"] = str(timestamp)
    if signature is not None:
        headers["webhook-signature"] = signature
    if content_type is not None:
        headers["content-type"] = content_type
    return InboundRequest("POST", "/hooks/sw", headers=Headers.of(headers), body=body)


def signed(body: bytes, content_type: str | None = "application/json") -> InboundRequest:
    return message(body, signature=sign_v1(SECRET, MSG_ID, TIMESTAMP, body), content_type=content_type)


async def handle(
    request: InboundRequest, config: SourceConfig | None = None, now: datetime = NOW
) -> Accepted | Refused:
    result = await StandardWebhooksConnector().handle(request, config or source(type="test"), now)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(request: InboundRequest, config: SourceConfig | None = None, now: datetime = NOW) -> Event:
    result = await handle(request, config, now)
    assert isinstance(result, Accepted), result
    assert result.dedup_key == request.header("webhook-id")
    (event,) = result.events
    return event


async def refused(
    request: InboundRequest, status: int, field: str, config: SourceConfig | None = None, now: datetime = NOW
) -> Refused:
    result = await handle(request, config, now)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


async def test_vector_a_is_accepted_with_the_type_option() -> None:
    event = await accepted(message())
    assert event.type == "standardwebhooks.test"
    assert (event.id, event.source) == (MSG_ID, "/hooks/sw")
    assert event.json_data() == {"test": 2432232314}  # no `data` member: the whole body
    assert event.datacontenttype == "application/json"
    assert event.time is None


async def test_vector_a_without_a_type_is_refused_naming_body_type() -> None:
    result = await refused(message(), 400, "body.type", config=source())
    assert "`type` option" in result.reason


async def test_vector_b_verifies_with_the_trusted_public_key() -> None:
    other = generate_secret()
    event = await accepted(message(signature=SIGNATURE_B), source(other, public_keys=[PUBLIC_KEY_B], type="test"))
    assert event.id == MSG_ID


async def test_vector_b_without_the_public_key_is_refused() -> None:
    await refused(message(signature=SIGNATURE_B), 401, "webhook-signature")


async def test_vector_c_takes_type_time_subject_and_data_from_the_payload() -> None:
    request = message(PAYLOAD_C, signature=SIGNATURE_C, msg_id=MSG_ID_C, timestamp=TIMESTAMP_C)
    event = await accepted(request, source(), NOW_C)
    assert event.type == "standardwebhooks.contact.created"
    assert event.id == MSG_ID_C
    assert event.subject == "1f81eb52-5198-4599-803e-771906343485"
    assert event.time == datetime(2022, 11, 3, 20, 26, 10, 344522, tzinfo=UTC)
    assert event.json_data() == {"id": "1f81eb52-5198-4599-803e-771906343485"}


async def test_a_signature_list_with_junk_and_unknown_versions_still_verifies() -> None:
    header = f"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc nonsense {SIGNATURE_A}"
    await accepted(message(signature=header))


async def test_both_secrets_verify_during_a_rotation() -> None:
    assert (await accepted(message(), source(generate_secret(), SECRET, type="test"))).id == MSG_ID


async def test_a_non_rfc3339_timestamp_is_left_out() -> None:
    event = await accepted(signed(b'{"type": "a.b", "timestamp": "yesterday", "data": null}'))
    assert (event.type, event.time, event.data) == ("standardwebhooks.a.b", None, b"null")


async def test_the_tolerance_edges_are_accepted() -> None:
    await accepted(message(), now=NOW + timedelta(seconds=300))
    await accepted(message(), now=NOW - timedelta(seconds=300))


# --- refusals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "missing"),
    [
        (message(msg_id=None), "webhook-id"),
        (message(timestamp=None), "webhook-timestamp"),
        (message(signature=None), "webhook-signature"),
        (message(signature=""), "webhook-signature"),
    ],
)
async def test_a_missing_header_is_refused(delivery: InboundRequest, missing: str) -> None:
    result = await refused(delivery, 401, missing)
    assert "missing" in result.reason


async def test_the_official_invalid_signature_is_refused_without_leaking_anything() -> None:
    result = await refused(message(signature=INVALID_A), 401, "webhook-signature")
    assert SECRET not in result.reason and SIGNATURE_A.removeprefix("v1,") not in result.reason


async def test_a_flipped_body_byte_is_refused() -> None:
    await refused(message(b'{"test": 2432232315}'), 401, "webhook-signature")


async def test_another_message_id_is_refused() -> None:
    await refused(message(msg_id="msg_other"), 401, "webhook-signature")


async def test_a_stale_timestamp_is_refused() -> None:
    result = await refused(message(), 401, "webhook-timestamp", now=NOW + timedelta(seconds=301))
    assert "301 s old" in result.reason


async def test_a_future_timestamp_is_refused() -> None:
    result = await refused(message(), 401, "webhook-timestamp", now=NOW - timedelta(seconds=301))
    assert "future" in result.reason


@pytest.mark.parametrize("timestamp", ["+1614265330", "1614265330.5", "-1", "soon"])
async def test_a_timestamp_that_is_not_unix_seconds_is_refused(timestamp: str) -> None:
    await refused(message(timestamp=timestamp), 401, "webhook-timestamp")


async def test_a_source_without_a_whsec_secret_or_key_refuses_everything() -> None:
    await refused(message(), 401, "webhook-signature", config=source("plain-text-secret", type="test"))


async def test_malformed_json_is_refused() -> None:
    await refused(signed(b'{"type": "a.b",'), 400, "body")


async def test_invalid_utf8_is_refused() -> None:
    result = await refused(signed(b'{"type": "a.b", "data": "\xc3\x28"}'), 400, "body")
    assert "UTF-8" in result.reason


async def test_a_form_body_is_refused() -> None:
    result = await refused(signed(b"type=a.b&data=1", "application/x-www-form-urlencoded"), 400, "body")
    assert "Content-Type" in result.reason


async def test_a_form_body_sent_as_json_is_refused() -> None:
    await refused(signed(b"type=a.b&data=1"), 400, "body")


async def test_an_invalid_body_type_without_a_fallback_is_refused() -> None:
    await refused(signed(b'{"type": "contact created"}'), 400, "body.type", config=source())


async def test_a_lone_surrogate_in_the_data_is_refused() -> None:
    await refused(signed(json.dumps({"type": "a.b", "data": "\ud800"}).encode()), 400, "body")


# --- options --------------------------------------------------------------------------------------------------


def test_options_are_normalised() -> None:
    connector = StandardWebhooksConnector()
    assert connector.validate_options({}) == {}
    assert connector.validate_options({"public_keys": f"{PUBLIC_KEY_B}, {PUBLIC_KEY_B}", "type": "x.y"}) == {
        "public_keys": [PUBLIC_KEY_B, PUBLIC_KEY_B],
        "type": "x.y",
    }


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"tolerance": 10}, "options.tolerance"),
        ({"public_keys": ["whpk_bm90IGEga2V5"]}, "options.public_keys[0]"),
        ({"public_keys": 3}, "options.public_keys"),
        ({"type": "a b"}, "options.type"),
        ({"type": 7}, "options.type"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        StandardWebhooksConnector().validate_options(options)
    assert caught.value.violations[0].field == field


def test_secrets_that_could_never_verify_are_refused_when_the_source_is_made() -> None:
    connector = StandardWebhooksConnector()
    connector.validate_secrets(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    with pytest.raises(InvalidArgumentError) as caught:
        connector.validate_secrets(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a plain password"])
    assert [v.field for v in caught.value.violations] == ["secrets[1]"]
