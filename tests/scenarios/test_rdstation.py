"""RD Station both ways through a real `eventbus serve` process (the installed `rdstation` plugin, SQLite, the RD
API double on loopback): lead and deal webhooks in, conversions and sales out, and the shop scenario of the
mission — a signed payment becomes an RD SALE, an abandoned cart an RD conversion, an RD lead reaches a gRPC
consumer and a webhook endpoint."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventbus_rdstation.testing import RDStationDouble
from standardwebhooks import Webhook

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from eventbus.errors import InvalidArgumentError
from eventbus.model import Event, StoredEvent
from eventbus.signing import generate_secret, sign_v1
from tests.grpc.helpers import Consumer
from tests.scenarios.conftest import Gateway, Inbox, eventually, post

LEAD_UUID = "c2f3d2b3-7250-4d27-97f4-eef38be32f7f"
SALE_MAPPING = {
    "event_type": "SALE",
    "payload": {"email": "$.data.buyer.email", "value": "$.data.amount", "funnel_name": "default"},
}
CART_MAPPING = {
    "event_type": "CONVERSION",
    "payload": {
        "conversion_identifier": "carrinho-abandonado",
        "email": "$.data.customer.email",
        "name": "$.data.customer.name",
        "tags": ["loja"],
    },
    "optional": ["name"],
}


def lead(n: int) -> dict[str, Any]:
    return {
        "id": str(n),
        "uuid": f"00000000-0000-4000-8000-00000000000{n}",
        "email": f"lead{n}@example.com",
        "name": f"Lead {n}",
        "opportunity": "false",
        "number_conversions": "3",
        "personal_phone": "48 999999999",
        "created_at": "2026-11-27T15:31:35-03:00",
        "last_conversion": {
            "content": {"identificador": "ebook-abc", "email_lead": f"lead{n}@example.com"},
            "created_at": "2026-11-27T15:31:35-03:00",
            "cumulative_sum": "2",
        },
    }


def converted(event_type: str = "WEBHOOK.CONVERTED", *, sent_at: str = "2026-11-27T14:09:02.724-03:00") -> bytes:
    return json.dumps(
        {
            "event_type": event_type,
            "entity_type": "CONTACT",
            "event_identifier": "newsletter",
            "timestamp": sent_at,
            "event_timestamp": "2026-11-27T14:07:04.254-03:00",
            "contact": {"uuid": LEAD_UUID, "email": "lead@example.com", "name": "Contact Name", "tags": ["site"]},
        }
    ).encode()


async def rd_source(client: EventBusClient, name: str = "rd") -> str:
    """A source of the rdstation connector; its generated token, shown once."""
    created = await client.create_source(name, "rdstation")
    [token] = created.revealed_secrets
    return token


async def events_from(client: EventBusClient, source: str) -> list[StoredEvent]:
    found, _ = await client.list_events(source=source, page_size=100)
    return found


async def rd_subscription(client: EventBusClient, rd_url: str, double: RDStationDouble, **options: Any) -> str:
    auth: dict[str, object] = {
        "client_id": double.client_id,
        "client_secret": double.client_secret,
        "refresh_token": "rd-refresh-0",
    }
    if "api_key" in options:
        auth = {}
    created = await client.create_subscription(
        "rdstation",
        patterns=options.pop("patterns", ["shop.**", "standardwebhooks.**"]),
        options={"base_url": rd_url, **auth, "mapping": SALE_MAPPING, **options},
    )
    return created.id


async def only_delivery(client: EventBusClient, subscription_id: str, event_id: str, state: str) -> DeliveryStatus:
    """The event's one delivery to the subscription, once it is in `state` after at least one attempt."""

    async def check() -> DeliveryStatus | None:
        found, _ = await client.list_deliveries(subscription_id=subscription_id, event_id=event_id)
        if len(found) == 1 and found[0].state == state and found[0].attempt_count >= 1:
            return await client.get_delivery(found[0].delivery_id)
        return None

    return await eventually(check, what=f"the delivery of {event_id} {state}")


def sale(email: str = "ana@example.com", amount: float = 199.9) -> Event:
    return Event.create(
        type="shop.payment.confirmed", source="/shop", data={"buyer": {"email": email}, "amount": amount}
    )


# -- inbound ------------------------------------------------------------------------------------------------------


async def test_a_legacy_body_with_three_leads_becomes_three_events(gateway: Gateway, client: EventBusClient) -> None:
    token = await rd_source(client)
    body = json.dumps({"leads": [lead(1), lead(2), lead(3)]}).encode()
    status, answer = await post(f"{gateway.http}/hooks/rd?token={token}", body)
    assert status == 202, answer
    events = await events_from(client, "/hooks/rd")
    assert [e.event.type for e in events] == ["rdstation.lead.converted"] * 3
    assert [e.event.subject for e in events] == [lead(n)["uuid"] for n in (1, 2, 3)]
    data = events[0].event.json_data()
    assert (data["opportunity"], data["number_conversions"]) == (False, 3)  # strings normalised
    assert data["personal_phone"] == "48 999999999"  # phones untouched
    assert data["conversion_identifier"] == "ebook-abc"
    # The same body again: answered 200, nothing new stored.
    again, _ = await post(f"{gateway.http}/hooks/rd?token={token}", body)
    assert again == 200
    assert len(await events_from(client, "/hooks/rd")) == 3


async def test_a_v2_body_becomes_one_event_and_a_redelivery_is_a_duplicate(
    gateway: Gateway, client: EventBusClient
) -> None:
    token = await rd_source(client)
    status, _ = await post(f"{gateway.http}/hooks/rd?token={token}", converted())
    assert status == 202
    # RD sends the same conversion again later: another `timestamp`, the same event.
    again, _ = await post(f"{gateway.http}/hooks/rd?token={token}", converted(sent_at="2026-11-27T15:00:00.000-03:00"))
    assert again == 200
    opportunity, _ = await post(f"{gateway.http}/hooks/rd?token={token}", converted("WEBHOOK.MARKED_OPPORTUNITY"))
    assert opportunity == 202
    events = await events_from(client, "/hooks/rd")
    assert [(e.event.type, e.event.subject) for e in events] == [
        ("rdstation.lead.converted", LEAD_UUID),
        ("rdstation.lead.opportunity", LEAD_UUID),
    ]


async def test_crm_deal_webhooks_become_deal_events(gateway: Gateway, client: EventBusClient) -> None:
    token = await rd_source(client, "rd-crm")
    for name in ("crm_deal_created", "crm_deal_updated", "crm_deal_deleted"):
        document = {
            "id": "deal-77",
            "name": "Big deal",
            "amount_total": 990.0,
            "updated_at": f"2026-11-27T1{len(name)}",
        }
        body = json.dumps({"event_name": name, "document": document}).encode()
        status, answer = await post(f"{gateway.http}/hooks/rd-crm?token={token}", body)
        assert status == 202, answer
    events = await events_from(client, "/hooks/rd-crm")
    assert [e.event.type for e in events] == [
        "rdstation.crm.deal_created",
        "rdstation.crm.deal_updated",
        "rdstation.crm.deal_deleted",
    ]
    assert {e.event.subject for e in events} == {"deal-77"}


async def test_a_wrong_or_missing_token_is_401_and_the_token_is_never_logged(
    gateway: Gateway, client: EventBusClient
) -> None:
    token = await rd_source(client)
    wrong, answer = await post(f"{gateway.http}/hooks/rd?token=not-the-token-at-all", converted())
    assert wrong == 401
    assert json.loads(answer)["status"] == 401
    missing, _ = await post(f"{gateway.http}/hooks/rd", converted())
    assert missing == 401
    assert await events_from(client, "/hooks/rd") == []
    accepted, _ = await post(f"{gateway.http}/hooks/rd?token={token}", converted())
    assert accepted == 202
    logs = gateway.logs()
    assert token not in logs and "not-the-token-at-all" not in logs


# -- outbound -----------------------------------------------------------------------------------------------------


async def test_mapping_mistakes_are_refused_when_the_subscription_is_created(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"mapping": {"event_type": "CONVERSION", "payload": {"email": "$.data.email"}}}, "conversion_identifier"),
        ({"mapping": {"event_type": "SALE", "payload": {"email": "$data.email"}}}, "options.mapping.payload.email"),
        ({"mapping": {"event_type": "sale", "payload": {"email": "$.data.email"}}}, "options.mapping.event_type"),
        ({"mapping": {"payload": {"email": "$.nowhere.email"}}}, "options.mapping.payload.email"),
        ({"api_key": "k", "mapping": SALE_MAPPING}, "options.mapping.event_type"),
    ]
    for options, field in cases:
        with pytest.raises(InvalidArgumentError) as refused:
            await rd_subscription(client, rd_url, double, **options)
        assert field in refused.value.violations[0].field, (field, refused.value.message)
    # The same through the command line: exit 1 and the field named.
    bad = json.dumps({"base_url": rd_url, "api_key": "k", "mapping": {"payload": {"email": "$.data.email"}}})
    command = ["subscriptions", "add", "--kind", "rdstation", "--options", bad, "--server", gateway.process.grpc]
    cli = await asyncio.create_subprocess_exec(sys.executable, "-m", "eventbus", *command, stdout=PIPE, stderr=PIPE)
    _, stderr = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 1, stderr
    assert "options.mapping.payload.conversion_identifier" in stderr.decode()
    listed, _ = await client.list_subscriptions(kind="rdstation")
    assert listed == []


async def test_an_expired_token_is_refreshed_and_the_new_tokens_survive_a_restart(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    subscription = await rd_subscription(client, rd_url, double)
    [first] = await client.publish([sale()])
    await only_delivery(client, subscription, first.event_id, "succeeded")
    double.expire_access_tokens()
    [second] = await client.publish([sale(amount=10)])
    delivery = await only_delivery(client, subscription, second.event_id, "succeeded")
    assert [a.outcome for a in delivery.attempts] == ["succeeded"]  # refreshed and resent inside one attempt
    assert double.counts["/auth/token"] == 2
    # RD retired rd-refresh-0 and rd-refresh-1 on use: only the stored rd-refresh-2 works now.
    assert double.refresh_tokens == {"rd-refresh-2"}

    await client.close()
    gateway.restart()
    double.expire_access_tokens()
    async with gateway.client() as restarted:
        [third] = await restarted.publish([sale(amount=20)])
        await only_delivery(restarted, subscription, third.event_id, "succeeded")
    assert double.counts["/auth/token"] == 3
    assert double.requests[-2].json == {
        "client_id": double.client_id,
        "client_secret": double.client_secret,
        "refresh_token": "rd-refresh-2",
    }
    assert [e["payload"] for e in double.events][-1] == {  # type: ignore[index]
        "email": "ana@example.com",
        "value": 20,
        "funnel_name": "default",
    }
    assert "rd-secret" not in gateway.logs() and "rd-refresh-2" not in gateway.logs()


ERROR_BODIES: list[tuple[int, object, str]] = [
    (400, {"error_type": "CANNOT_BE_NULL", "error_message": "Cannot be null."}, "Cannot be null."),
    (422, {"errors": {"error_type": "CONFLICTING_FIELD", "error_message": "Conflicting."}}, "Conflicting."),
    (400, {"errors": {"email": [{"error_type": "INVALID_FORMAT", "error_message": "Bad email."}]}}, "Bad email."),
    (
        400,
        {"errors": [{"error_type": "INVALID_OPTION", "error_message": "Must be one of.", "path": "$.body.x"}]},
        "$.body.x",
    ),
    (400, {"error": "Something went wrong"}, "Something went wrong"),
    (422, {"message": "Unprocessable"}, "Unprocessable"),
]


async def test_each_rd_error_body_shape_lands_in_the_attempt_and_rejects(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    subscription = await rd_subscription(client, rd_url, double)
    for status, body, expected in ERROR_BODIES:
        double.fail_next(status, body, path="/platform/events")
        [published] = await client.publish([sale()])
        delivery = await only_delivery(client, subscription, published.event_id, "dead")
        assert delivery.dead_reason == "rejected"
        [attempt] = delivery.attempts
        assert attempt.status_code == status
        assert attempt.error is not None and expected in attempt.error, (body, attempt.error)
        raw = body if isinstance(body, str) else json.dumps(body)
        assert attempt.response_body == raw.encode()
    found = await client.get_subscription(subscription)
    assert (found.state, found.health.consecutive_failures) == ("active", 0)  # rejections are not failures


async def test_answers_that_are_not_rd_are_retried_with_an_alert_not_lost(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    # A firewall's HTML 400 says nothing against the event, and an HTML 200 (a wrong base_url, a captive proxy)
    # is not RD's `event_uuid`: neither rejects nor counts as sent. Both are retried, and the operator is told.
    subscription = await rd_subscription(client, rd_url, double)
    double.fail_next(400, "<html>oops</html>", path="/platform/events")
    [blocked] = await client.publish([sale()])
    delivery = await only_delivery(client, subscription, blocked.event_id, "pending")
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.outcome, attempt.error_class) == (400, "retry", "endpoint")
    assert attempt.error is not None and "base_url" in attempt.error
    assert attempt.response_body == b"<html>oops</html>"
    double.fail_next(200, "<html>Welcome to the portal</html>", path="/platform/events")
    [portal] = await client.publish([sale(amount=5)])
    delivery = await only_delivery(client, subscription, portal.event_id, "pending")
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.outcome, attempt.error_class) == (200, "retry", "endpoint")
    assert attempt.error is not None and "event_uuid" in attempt.error
    assert double.events == []
    found, _ = await client.list_events(patterns=["eventbus.endpoint.failing"])
    assert {e.event.json_data()["subscription_id"] for e in found} == {subscription}


async def test_server_failures_and_auth_failures_are_retried(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    subscription = await rd_subscription(client, rd_url, double)
    double.fail_next(500, "<html>upstream</html>", path="/platform/events")
    [failed] = await client.publish([sale()])
    delivery = await only_delivery(client, subscription, failed.event_id, "pending")
    assert [(a.status_code, a.outcome, a.error_class) for a in delivery.attempts] == [(500, "retry", "server")]
    # Refused even after a refresh: retried, and the operator is told at once.
    invalid = {"errors": [{"error_type": "UNAUTHORIZED", "error_message": "Invalid token."}]}
    double.fail_next(401, invalid, times=2, path="/platform/events")
    [refused] = await client.publish([sale()])
    delivery = await only_delivery(client, subscription, refused.event_id, "pending")
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.error_class) == (401, "auth")
    found, _ = await client.list_events(patterns=["eventbus.endpoint.failing"])
    assert [e.event.json_data()["subscription_id"] for e in found] == [subscription]


async def test_429_backs_off_by_retry_after(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    subscription = await rd_subscription(client, rd_url, double)
    limited = {"error": "Too Many Requests", "max_requests": 120, "current_usage": 121, "remaining_time_ms": 45000}
    double.fail_next(429, limited, headers={"Retry-After": "120"}, path="/platform/events")
    [published] = await client.publish([sale()])
    delivery = await only_delivery(client, subscription, published.event_id, "pending")
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.error_class) == (429, "rate_limited")
    assert attempt.next_attempt_at is not None
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(seconds=120)
    double.fail_next(429, limited, path="/platform/events")  # no Retry-After: the body's remaining_time_ms
    [second] = await client.publish([sale()])
    [attempt] = (await only_delivery(client, subscription, second.event_id, "pending")).attempts
    assert attempt.next_attempt_at is not None
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(seconds=45)


async def test_the_per_account_rate_limit_holds_across_subscriptions(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    # RD's limit here: 10 requests in any one-second window (fixed windows). Two subscriptions of one account
    # limited to 300 a minute (5/s, a burst of 5) together never pass 10 in a window, so RD never answers 429.
    double.rate_limit, double.rate_window = 10, 1.0
    double.reset_rate_limit()
    subscriptions = [
        await rd_subscription(
            client,
            rd_url,
            double,
            api_key="rd-api-key",
            mapping=CART_MAPPING,
            rate_limit_per_minute=300,
            patterns=["shop.cart.abandoned"],
        )
        for _ in range(2)
    ]
    carts = [
        Event.create(type="shop.cart.abandoned", source="/shop", data={"customer": {"email": f"c{n}@example.com"}})
        for n in range(10)
    ]
    await client.publish(carts)

    async def all_sent() -> bool:
        counts = [(await client.get_subscription(s)).stats for s in subscriptions]
        return all(c.succeeded == 10 for c in counts)

    await eventually(all_sent, within=30, what="20 conversions sent")
    times = sorted(r.received_at for r in double.requests if r.path == "/platform/conversions")
    assert len(times) == 20
    assert double.statuses[429] == 0
    # A token bucket of 5/s with a burst of 5: at most 5 + 5·t sends in any span t (100 ms of slack).
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 5 + 5 * (times[j] - times[i] + 0.1), (i, j, times[j] - times[i])


# -- the shop scenario -------------------------------------------------------------------------------------------


async def test_a_signed_payment_webhook_becomes_an_rd_sale_for_the_buyer(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    secret = generate_secret()
    await client.create_source("payments", "standardwebhooks", secrets=[secret])
    subscription = await rd_subscription(client, rd_url, double, patterns=["standardwebhooks.payment.confirmed"])
    body = json.dumps(
        {
            "type": "payment.confirmed",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"id": "pay_123", "buyer": {"email": "ana@example.com", "name": "Ana"}, "amount": 349.9},
        }
    ).encode()
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_v1(secret, msg_id, stamp, body),
    }
    status, answer = await post(f"{gateway.http}/hooks/payments", body, headers)
    assert status == 202, answer
    [event] = await events_from(client, "/hooks/payments")
    await only_delivery(client, subscription, event.event_id, "succeeded")
    [sent] = double.events
    assert sent["event_type"] == "SALE" and sent["event_family"] == "CDP" and sent["via"] == "oauth"
    assert sent["payload"] == {"email": "ana@example.com", "value": 349.9, "funnel_name": "default"}
    # A forged payment (a flipped byte) is refused and never reaches RD.
    forged = body.replace(b"349.9", b"0.01")
    headers["webhook-id"] = f"msg_{uuid.uuid4().hex}"
    status, _ = await post(f"{gateway.http}/hooks/payments", forged, headers)
    assert status == 401
    assert len(double.events) == 1


async def test_an_abandoned_cart_becomes_the_rd_conversion_carrinho_abandonado(
    gateway: Gateway, client: EventBusClient, rd_url: str, double: RDStationDouble
) -> None:
    api_key = "rd-key-0123456789abcdef"  # longer than 12 characters: still shown as *** alone
    double.api_keys.add(api_key)
    subscription = await rd_subscription(
        client, rd_url, double, api_key=api_key, mapping=CART_MAPPING, patterns=["shop.cart.abandoned"]
    )
    cart = Event.create(
        type="shop.cart.abandoned",
        source="/shop",
        subject="cart-42",
        data={"customer": {"email": "bia@example.com", "name": "Bia"}, "items": [{"sku": "TSHIRT-1"}]},
    )
    anonymous = Event.create(type="shop.cart.abandoned", source="/shop", data={"customer": {"email": "x@example.com"}})
    no_email = Event.create(type="shop.cart.abandoned", source="/shop", data={"customer": {"name": "Nobody"}})
    published = await client.publish([cart, anonymous, no_email])
    await only_delivery(client, subscription, published[0].event_id, "succeeded")
    await only_delivery(client, subscription, published[1].event_id, "succeeded")
    dead = await only_delivery(client, subscription, published[2].event_id, "dead")
    assert dead.dead_reason == "rejected" and dead.last_error is not None and "email" in dead.last_error
    assert [e["payload"] for e in double.events] == [
        {"conversion_identifier": "carrinho-abandonado", "email": "bia@example.com", "name": "Bia", "tags": ["loja"]},
        {"conversion_identifier": "carrinho-abandonado", "email": "x@example.com", "tags": ["loja"]},
    ]
    assert {r.path for r in double.requests} == {"/platform/conversions"}
    assert {r.query["api_key"] for r in double.requests} == {api_key}
    assert api_key not in gateway.logs()
    shown = await client.get_subscription(subscription)
    assert shown.options["api_key"] == "***"  # never shown back, not even its last characters
    listed, _ = await client.list_subscriptions(kind="rdstation")
    assert [s.options["api_key"] for s in listed] == ["***"]


async def test_an_rd_lead_reaches_a_grpc_consumer_and_a_webhook_endpoint(
    gateway: Gateway, client: EventBusClient, inbox: Inbox
) -> None:
    token = await rd_source(client)
    endpoint = await client.create_subscription("webhook", patterns=["rdstation.lead.*"], options={"url": inbox.url})
    async with Consumer(client.subscribe("crm-sync", ["rdstation.lead.*"])) as consumer:
        status, _ = await post(f"{gateway.http}/hooks/rd?token={token}", converted())
        assert status == 202
        delivery = await consumer.queue.get()
        assert (delivery.event.event.type, delivery.event.event.subject) == ("rdstation.lead.converted", LEAD_UUID)
        assert delivery.event.event.json_data()["contact"]["email"] == "lead@example.com"
        await delivery.ack()
    await inbox.wait_for(1)
    [(headers, body)] = inbox.received
    assert endpoint.secret is not None
    verified = Webhook(endpoint.secret).verify(body, {k.lower(): v for k, v in headers.items()})
    assert verified["type"] == "rdstation.lead.converted"
    assert verified["data"]["contact"]["uuid"] == LEAD_UUID
