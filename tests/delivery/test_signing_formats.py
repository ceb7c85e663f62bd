"""What one outbound request looks like: Standard Webhooks signatures (v1, v1a, rotation), the webhook-* headers,
and each payload format's body and headers (DESIGN.md §5, reference/specs.md §1)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from eventbus import __version__
from eventbus.clock import ManualClock
from eventbus.model import Event, PublishResult, format_rfc3339
from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret
from tests.delivery.helpers import (
    MakeReceiver,
    Received,
    Reply,
    advance_to,
    create_endpoint,
    delivery_of,
    order,
    publish,
    wait_attempts,
)


async def test_signature_verifies_with_the_reference_library(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order(7))

    [request] = await hook.wait_for(1)

    secret = str(endpoint.revealed["secret"])
    assert secret.startswith("whsec_")
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["data"] == {"n": 7}
    assert request.webhook_id == published.event_id
    assert abs(request.timestamp - int(datetime.now(UTC).timestamp())) < 60
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body + b" ", request.headers)


async def test_ed25519_endpoint_adds_a_v1a_signature(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, options={"ed25519": True})
    await publish(server, order(1))

    [request] = await hook.wait_for(1)

    public = str(endpoint.revealed["public_key"])
    assert public.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    [v1a] = request.signatures("v1a")
    signed = f"{request.webhook_id}.{request.timestamp}.".encode() + request.body
    key.verify(base64.b64decode(v1a), signed)  # raises InvalidSignature when wrong
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(v1a), signed + b"x")
    Webhook(str(endpoint.revealed["secret"])).verify(request.body, request.headers)  # v1 is still there


def _v1_matches(secret: str, request: Received) -> bool:
    moment = datetime.fromtimestamp(request.timestamp, UTC)
    expected = Webhook(secret).sign(request.webhook_id, moment, request.body.decode()).partition(",")[2]
    return expected in request.signatures("v1")


async def test_rotation_signs_with_both_secrets_for_24_hours(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    old = str(endpoint.revealed["secret"])
    rotated = await server.services.subscriptions.rotate_secret(endpoint.subscription.id)
    new = str(rotated.revealed["secret"])
    assert new != old

    subscription_id = endpoint.subscription.id

    async def recorded(published: PublishResult) -> None:
        # The clock moves by hours next: an attempt still being recorded would find its lease run out (and the
        # delivery sent again). Wait until the store has it.
        await wait_attempts(server, (await delivery_of(server, subscription_id, published.event_id)).delivery_id, 1)

    [first] = await publish(server, order(1))
    [during] = await hook.wait_for(1)
    assert len(during.signatures("v1")) == 2
    Webhook(old).verify(during.body, during.headers)
    Webhook(new).verify(during.body, during.headers)
    await recorded(first)

    clock.advance(timedelta(hours=23, minutes=59))
    [second] = await publish(server, order(2))
    late = (await hook.wait_for(2))[1]
    assert _v1_matches(old, late)
    assert _v1_matches(new, late)
    await recorded(second)

    clock.advance(timedelta(minutes=1, seconds=1))  # 24 h + 1 s after the rotation
    await publish(server, order(3))
    after = (await hook.wait_for(3))[2]
    assert len(after.signatures("v1")) == 1
    assert _v1_matches(new, after)
    assert not _v1_matches(old, after)


async def test_same_webhook_id_across_retries_with_a_new_timestamp_each(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.replies.extend([Reply(500), Reply(500)])
    endpoint = await create_endpoint(server, hook, retry_schedule=[timedelta(seconds=5)] * 2)  # ±5 min tolerance
    [published] = await publish(server, order(1))
    record = await delivery_of(server, endpoint.subscription.id, published.event_id)

    for count in (1, 2):
        _, attempts = await wait_attempts(server, record.delivery_id, count)
        next_at = attempts[-1].next_attempt_at
        assert next_at is not None
        advance_to(clock, next_at)
    requests = await hook.wait_for(3)

    secret = str(endpoint.revealed["secret"])
    assert {r.webhook_id for r in requests} == {published.event_id}
    assert requests[0].timestamp < requests[1].timestamp < requests[2].timestamp
    assert requests[1].timestamp - requests[0].timestamp >= 4  # the 5 s retry, jittered by at most 20 %
    for request in requests:
        Webhook(secret).verify(request.body, request.headers)  # each attempt signed with its own timestamp


async def test_standard_format_body(server: EventBusServer, receiver: MakeReceiver, clock: ManualClock) -> None:
    hook = await receiver()
    await create_endpoint(server, hook)
    occurred = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    received_at = clock.now()
    published = await publish(
        server,
        order(data={"amount": 10, "tags": ["a", "é"]}, time=occurred),
        order(data={"amount": 11}),  # no `time`: the bus's received_at
        order(data=b"\x00\xffbinary", datacontenttype="application/octet-stream"),
        order(data="plain text", datacontenttype="text/plain"),
    )

    by_id = {r.webhook_id: r for r in await hook.wait_for(4)}
    timed, untimed, binary, text = (by_id[p.event_id] for p in published)

    for request in by_id.values():
        assert request.headers["content-type"] == "application/json"
    assert json.loads(timed.body) == {
        "type": "order.paid",
        "timestamp": format_rfc3339(occurred),
        "data": {"amount": 10, "tags": ["a", "é"]},
    }
    assert json.loads(untimed.body) == {
        "type": "order.paid",
        "timestamp": format_rfc3339(received_at),
        "data": {"amount": 11},
    }
    assert json.loads(binary.body) == {
        "type": "order.paid",
        "timestamp": format_rfc3339(received_at),
        "data_base64": base64.b64encode(b"\x00\xffbinary").decode(),
    }
    assert base64.b64decode(json.loads(text.body)["data_base64"]) == b"plain text"


async def test_cloudevents_structured_format(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    await create_endpoint(server, hook, options={"format": "cloudevents-structured"})
    occurred = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    event = order(data={"amount": 10}, id="ord-1", subject="order-1", time=occurred, extensions={"tenant": "acme"})
    await publish(server, event)

    [request] = await hook.wait_for(1)

    assert request.headers["content-type"] == "application/cloudevents+json"
    assert not [name for name in request.headers if name.startswith("ce-")]
    assert json.loads(request.body) == {
        "specversion": "1.0",
        "id": "ord-1",
        "source": "/shop",
        "type": "order.paid",
        "subject": "order-1",
        "time": format_rfc3339(occurred),
        "datacontenttype": "application/json",
        "tenant": "acme",
        "data": {"amount": 10},
    }


async def test_cloudevents_binary_format(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    await create_endpoint(server, hook, options={"format": "cloudevents-binary"})
    occurred = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    xml = b"<order id='1'>caf\xc3\xa9</order>"
    event = Event.create(
        type="order.paid",
        source="/shop",
        id="ord-1",
        subject="order-1",
        time=occurred,
        data=xml,
        datacontenttype="application/xml",
        extensions={"tenant": "acme"},
    )
    await publish(server, event)

    [request] = await hook.wait_for(1)

    assert request.body == xml
    assert request.headers["content-type"] == "application/xml"
    ce = {name: value for name, value in request.headers.items() if name.startswith("ce-")}
    assert ce == {
        "ce-specversion": "1.0",
        "ce-id": "ord-1",
        "ce-source": "/shop",
        "ce-type": "order.paid",
        "ce-subject": "order-1",
        "ce-time": format_rfc3339(occurred),
        "ce-tenant": "acme",
    }


async def test_raw_format(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    await create_endpoint(server, hook, options={"format": "raw"})
    published = await publish(server, order(data=b"a,b\n1,2\n", datacontenttype="text/csv"), order(data={"amount": 1}))

    by_id = {r.webhook_id: r for r in await hook.wait_for(2)}
    csv, as_json = (by_id[p.event_id] for p in published)

    assert csv.body == b"a,b\n1,2\n"
    assert csv.headers["content-type"] == "text/csv"
    assert json.loads(as_json.body) == {"amount": 1}
    assert as_json.headers["content-type"] == "application/json"
    assert not [name for name in csv.headers if name.startswith("ce-")]


async def test_extra_headers_user_agent_and_traceparent(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    await create_endpoint(server, hook, options={"headers": {"X-Tenant": "acme", "Authorization": "Bearer t0k"}})
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    published = await publish(server, order(1, extensions={"traceparent": traceparent}), order(2))

    by_id = {r.webhook_id: r for r in await hook.wait_for(2)}
    traced, plain = (by_id[p.event_id] for p in published)

    for request in (traced, plain):
        assert request.headers["user-agent"] == f"eventbus/{__version__}"
        assert request.headers["x-tenant"] == "acme"
        assert request.headers["authorization"] == "Bearer t0k"
    assert traced.headers["traceparent"] == traceparent
    assert "traceparent" not in plain.headers
