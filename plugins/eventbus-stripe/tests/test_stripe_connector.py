"""The stripe connector against the computed vector of reference/specs.md §4.2 and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from eventbus_stripe import StripeConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig

SECRET = "whsec_test_secret"
OLD_SECRET = "whsec_the_one_before"
T = 1700000000
NOW = datetime.fromtimestamp(T, UTC)
VECTOR_BODY = b'{"id":"evt_test","object":"event"}'
VECTOR_HEADER = "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724"
SOURCE = SourceConfig("pay", "stripe", secrets=(SECRET,))
EVENT = json.dumps(
    {
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1699999990,
        "livemode": False,
        "data": {"object": {"id": "pi_3NG8Dt2eZvKYlo2C0ayk8ofx", "object": "payment_intent", "amount": 2000}},
    },
    separators=(",", ":"),
).encode()


def v1(body: bytes, secret: str = SECRET, t: int = T) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def delivery(
    body: bytes = EVENT, header: str | None = None, content_type: str | None = "application/json; charset=utf-8"
) -> InboundRequest:
    headers = {"User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers["Stripe-Signature"] = header if header is not None else f"t={T},v1={v1(body)}"
    return InboundRequest("POST", "/hooks/pay", headers=Headers.of(headers), body=body)


async def handle(request: InboundRequest, source: SourceConfig = SOURCE, now: datetime = NOW) -> Accepted | Refused:
    result = await StripeConnector().handle(request, source, now)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(request: InboundRequest, source: SourceConfig = SOURCE, now: datetime = NOW) -> Event:
    result = await handle(request, source, now)
    assert isinstance(result, Accepted), result
    (event,) = result.events
    assert result.dedup_key == event.id
    return event


async def refused(request: InboundRequest, status: int, field: str, now: datetime = NOW) -> Refused:
    result = await handle(request, now=now)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


def test_the_computed_vector_signs_as_stripe_python_does() -> None:
    assert f"t={T},v1={v1(VECTOR_BODY)}" == VECTOR_HEADER


async def test_the_computed_vector_verifies_and_only_its_missing_type_is_refused() -> None:
    result = await refused(delivery(VECTOR_BODY, VECTOR_HEADER), 400, "body.type")
    assert "payment_intent.succeeded" in result.reason


async def test_an_event_becomes_one_event_deduplicated_on_its_id() -> None:
    event = await accepted(delivery())
    assert event.type == "stripe.payment_intent.succeeded"
    assert (event.id, event.source) == ("evt_1NG8Du2eZvKYlo2CUI79vXWy", "/hooks/pay")
    assert event.subject == "pi_3NG8Dt2eZvKYlo2C0ayk8ofx"
    assert event.time == datetime.fromtimestamp(1699999990, UTC)
    assert event.data == EVENT
    assert event.datacontenttype == "application/json"


async def test_a_thin_event_takes_the_related_object_as_subject() -> None:
    body = json.dumps(
        {
            "id": "evt_test_65R",
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered",
            "created": "2024-09-26T20:41:09.178Z",
            "related_object": {"id": "mtr_test_61R", "type": "billing.meter"},
        }
    ).encode()
    event = await accepted(delivery(body))
    assert (event.type, event.subject) == ("stripe.v1.billing.meter.error_report_triggered", "mtr_test_61R")
    assert event.time == datetime(2024, 9, 26, 20, 41, 9, 178000, tzinfo=UTC)


async def test_every_v1_is_tried_and_other_schemes_are_ignored() -> None:
    header = f"t={T},v0=deadbeef,v1={'0' * 64},v1={v1(EVENT)}"
    await accepted(delivery(header=header))


async def test_both_secrets_verify_during_a_rotation() -> None:
    rotating = SourceConfig("pay", "stripe", secrets=("whsec_the_new_one", OLD_SECRET))
    await accepted(delivery(header=f"t={T},v1={v1(EVENT, OLD_SECRET)}"), rotating)
    await accepted(delivery(header=f"t={T},v1={v1(EVENT, 'whsec_the_new_one')}"), rotating)


async def test_the_tolerance_edges_are_accepted() -> None:
    await accepted(delivery(), now=NOW + timedelta(seconds=300))
    await accepted(delivery(), now=NOW - timedelta(seconds=300))


# --- refusals -------------------------------------------------------------------------------------------------


async def test_a_missing_signature_header_is_refused() -> None:
    request = InboundRequest("POST", "/hooks/pay", headers=Headers.of({"Content-Type": "application/json"}), body=EVENT)
    await refused(request, 401, "Stripe-Signature")


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (f"v1={'a' * 64}", "no t="),
        (f"t=soon,v1={'a' * 64}", "no t="),
        (f"t=-5,v1={'a' * 64}", "no t="),
        (f"t={T}", "no v1="),
        (f"t={T},v0={'a' * 64}", "no v1="),
        ("garbage", "no t="),
    ],
)
async def test_a_malformed_header_is_refused(header: str, words: str) -> None:
    result = await refused(delivery(header=header), 401, "Stripe-Signature")
    assert words in result.reason


async def test_another_secret_is_refused_without_leaking_anything() -> None:
    result = await refused(delivery(header=f"t={T},v1={v1(EVENT, 'whsec_other')}"), 401, "Stripe-Signature")
    assert SECRET not in result.reason and v1(EVENT) not in result.reason


async def test_the_secret_is_not_base64_decoded() -> None:
    # Stripe keys the HMAC with the whole string, `whsec_` included: without the prefix it is another key.
    await refused(delivery(header=f"t={T},v1={v1(EVENT, 'test_secret')}"), 401, "Stripe-Signature")


async def test_a_flipped_body_byte_is_refused() -> None:
    await refused(delivery(EVENT.replace(b"2000", b"2001"), header=f"t={T},v1={v1(EVENT)}"), 401, "Stripe-Signature")


async def test_a_changed_timestamp_is_refused() -> None:
    await refused(delivery(header=f"t={T + 1},v1={v1(EVENT)}"), 401, "Stripe-Signature")


async def test_a_stale_timestamp_is_refused() -> None:
    result = await refused(delivery(), 401, "Stripe-Signature", now=NOW + timedelta(seconds=301))
    assert "301 s old" in result.reason


async def test_a_future_timestamp_is_refused() -> None:
    result = await refused(delivery(), 401, "Stripe-Signature", now=NOW - timedelta(seconds=301))
    assert "future" in result.reason


async def test_malformed_json_is_refused() -> None:
    await refused(delivery(b'{"id": "evt_1", "type": '), 400, "body")


async def test_invalid_utf8_is_refused() -> None:
    await refused(delivery(b'{"id": "evt_\xff", "type": "charge.failed"}'), 400, "body")


async def test_a_json_array_is_refused() -> None:
    await refused(delivery(b"[]"), 400, "body")


async def test_a_form_body_is_refused() -> None:
    await refused(
        delivery(b"id=evt_1&type=charge.failed", content_type="application/x-www-form-urlencoded"), 400, "body"
    )


async def test_a_form_body_sent_as_json_is_refused() -> None:
    await refused(delivery(b"id=evt_1&type=charge.failed"), 400, "body")


async def test_a_missing_event_id_is_refused() -> None:
    await refused(delivery(b'{"type": "charge.failed"}'), 400, "body.id")


async def test_a_type_that_is_not_an_event_type_is_refused() -> None:
    await refused(delivery(b'{"id": "evt_1", "type": "charge failed"}'), 400, "body.type")


def test_options_are_refused_naming_the_field() -> None:
    assert StripeConnector().validate_options({}) == {}
    with pytest.raises(InvalidArgumentError) as caught:
        StripeConnector().validate_options({"tolerance": 600})
    assert caught.value.violations[0].field == "options.tolerance"
