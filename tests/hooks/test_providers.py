"""Each bundled connector end to end: a delivery signed the way its provider signs is POSTed to `/hooks/{source}`
on a real server that loaded the installed plugins, becomes an event, reaches a gRPC subscriber, and is sent on
to a webhook endpoint; the same delivery with a flipped body byte is refused and stores nothing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import pytest
from aiohttp import web

from eventbus.bus.service import BusSettings
from eventbus.bus.sources import SourceInput
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret, sign_v1

GITHUB_SECRET = "It's a Secret to Everybody"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
STRIPE_SECRET = "whsec_test_secret"
SHOP_SECRET = "shop-secret"
HMAC_SECRET = "acme-secret"
STANDARD_SECRET = generate_secret()


@dataclass(frozen=True)
class Provider:
    connector: str
    secret: str
    options: dict[str, object]
    request: Callable[[datetime], tuple[dict[str, str], bytes]]
    type: str


def _hex(secret: str, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, algorithm).hexdigest()


def github(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"action": "opened", "repository": {"full_name": "acme/shop"}, "number": 7}).encode()
    return {
        "X-Hub-Signature-256": "sha256=" + _hex(GITHUB_SECRET, body),
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "Content-Type": "application/json",
    }, body


def stripe(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "id": "evt_1",
            "type": "payment_intent.succeeded",
            "created": int(now.timestamp()),
            "data": {"object": {"id": "pi_1"}},
        }
    ).encode()
    t = int(now.timestamp())
    return {
        "Stripe-Signature": f"t={t},v1={_hex(STRIPE_SECRET, f'{t}.'.encode() + body)}",
        "Content-Type": "application/json",
    }, body


def shopify(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"id": 820982911946154508, "total_price": "19.99"}).encode()
    digest = hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()
    return {
        "X-Shopify-Hmac-SHA256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "X-Shopify-Shop-Domain": "acme.myshopify.com",
        "Content-Type": "application/json",
    }, body


def slack(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "Ev01",
            "event_time": int(now.timestamp()),
            "event": {"type": "app_mention", "channel": "C1", "text": "hi"},
        }
    ).encode()
    ts = str(int(now.timestamp()))
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + _hex(SLACK_SECRET, f"v0:{ts}:".encode() + body),
        "Content-Type": "application/json",
    }, body


def standard(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"type": "invoice.paid", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "inv_1"}}).encode()
    ts = int(now.timestamp())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_v1(STANDARD_SECRET, "msg_1", ts, body),
        "Content-Type": "application/json",
    }, body


def generic(now: datetime) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"kind": "lead.created", "lead": {"id": "L-1"}}).encode()
    ts = str(int(now.timestamp()))
    return {
        "X-Acme-Signature": "sha256=" + _hex(HMAC_SECRET, f"{ts}.".encode() + body),
        "X-Acme-Timestamp": ts,
        "X-Acme-Delivery": "del-1",
        "Content-Type": "application/json",
    }, body


PROVIDERS = {
    "github": Provider("github", GITHUB_SECRET, {}, github, "github.pull_request.opened"),
    "stripe": Provider("stripe", STRIPE_SECRET, {}, stripe, "stripe.payment_intent.succeeded"),
    "shopify": Provider("shopify", SHOP_SECRET, {}, shopify, "shopify.orders.create"),
    "slack": Provider("slack", SLACK_SECRET, {}, slack, "slack.app_mention"),
    "standardwebhooks": Provider("standardwebhooks", STANDARD_SECRET, {}, standard, "standardwebhooks.invoice.paid"),
    "hmac": Provider(
        "hmac",
        HMAC_SECRET,
        {
            "header": "X-Acme-Signature",
            "prefix": "sha256=",
            "signed": "{timestamp}.{body}",
            "timestamp_header": "X-Acme-Timestamp",
            "type_field": "kind",
            "id_header": "X-Acme-Delivery",
        },
        generic,
        "hmac.lead.created",
    ),
}


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, allow_destinations=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    running = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings)  # the installed plugins
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await received.put(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/in", received
    await runner.cleanup()


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_a_signed_provider_delivery_reaches_a_subscriber_and_an_endpoint(
    name: str,
    server: EventBusServer,
    client: EventBusClient,
    http_url: str,
    clock: ManualClock,
    receiver: tuple[str, asyncio.Queue[bytes]],
) -> None:
    provider = PROVIDERS[name]
    await server.services.sources.create(
        SourceInput(name=name, connector=provider.connector, secrets=[provider.secret], options=provider.options)
    )
    url, received = receiver
    await server.services.subscriptions.create(SubscriptionInput(patterns=[f"{name}.**"], options={"url": url}))
    headers, body = provider.request(clock.now())
    async with client.subscribe(None, [f"{name}.**"]) as subscription:
        async with aiohttp.ClientSession() as http:
            tampered = body[:-1] + b" " + body[-1:]  # still the same JSON, no longer the signed bytes
            async with http.post(f"{http_url}/hooks/{name}", data=tampered, headers=headers) as refused:
                assert refused.status == 401, await refused.text()
            async with http.post(f"{http_url}/hooks/{name}", data=body, headers=headers) as accepted:
                assert accepted.status == 202, await accepted.text()
                [answer] = (await accepted.json())["events"]
        delivery = await asyncio.wait_for(anext(aiter(subscription)), 5)
        await delivery.ack()
    assert (delivery.event.event.type, delivery.event.event_id) == (provider.type, answer["event_id"])
    sent = json.loads(await asyncio.wait_for(received.get(), 5))
    assert sent["type"] == provider.type
    events, _ = await server.bus.list_events(page_size=100, source=f"/hooks/{name}")
    assert len(events) == 1  # the tampered one stored nothing
