"""The shopify connector against the computed vector of reference/specs.md §4.3 and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from eventbus_shopify import ShopifyConnector

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import Accepted, Headers, InboundRequest, Refused, SourceConfig

SECRET = "shop-secret"
VECTOR_BODY = b'{"id":1}'
VECTOR_HMAC = "plW8VGqq0nDMIEhDqaNNW99asdUCy7EIqLZVcQwtAZ0="
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SOURCE = SourceConfig("shop", "shopify", secrets=(SECRET,))
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
ORDER = json.dumps({"id": 820982911946154508, "email": "jon@example.com", "total_price": "403.00"}).encode()


def mac(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook(
    body: bytes = ORDER,
    *,
    signature: str | None = None,
    secret: str = SECRET,
    topic: str | None = "orders/create",
    webhook_id: str | None = WEBHOOK_ID,
    content_type: str | None = "application/json",
    prefix: str = "X-",
    triggered_at: str | None = None,
) -> InboundRequest:
    headers = {f"{prefix}Shopify-Shop-Domain": "example.myshopify.com", f"{prefix}Shopify-API-Version": "2026-04"}
    if topic is not None:
        headers[f"{prefix}Shopify-Topic"] = topic
    if webhook_id is not None:
        headers[f"{prefix}Shopify-Webhook-Id"] = webhook_id
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers[f"{prefix}Shopify-Hmac-Sha256"] = signature if signature is not None else mac(body, secret)
    if triggered_at is not None:
        headers[f"{prefix}Shopify-Triggered-At"] = triggered_at
    return InboundRequest("POST", "/hooks/shop", headers=Headers.of(headers), body=body)


async def handle(request: InboundRequest, source: SourceConfig = SOURCE) -> Accepted | Refused:
    result = await ShopifyConnector().handle(request, source, NOW)
    assert isinstance(result, Accepted | Refused)
    return result


async def accepted(request: InboundRequest, source: SourceConfig = SOURCE) -> Event:
    result = await handle(request, source)
    assert isinstance(result, Accepted), result
    (event,) = result.events
    assert result.dedup_key == event.id
    return event


async def refused(request: InboundRequest, status: int, field: str) -> Refused:
    result = await handle(request)
    assert isinstance(result, Refused), result
    assert (result.status, result.field) == (status, field), result
    return result


async def test_the_computed_vector_is_accepted() -> None:
    assert mac(VECTOR_BODY) == VECTOR_HMAC
    event = await accepted(webhook(VECTOR_BODY, signature=VECTOR_HMAC))
    assert (event.type, event.id, event.subject) == ("shopify.orders.create", WEBHOOK_ID, "1")


async def test_an_order_becomes_one_event() -> None:
    event = await accepted(webhook(triggered_at="2026-05-01T11:59:58.123456789Z"))
    assert event.type == "shopify.orders.create"
    assert (event.id, event.source) == (WEBHOOK_ID, "/hooks/shop")
    assert event.subject == "820982911946154508"
    assert event.data == ORDER
    assert event.datacontenttype == "application/json"
    assert event.extensions == {"shopifyshopdomain": "example.myshopify.com"}
    assert event.time == datetime(2026, 5, 1, 11, 59, 58, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("topic", "event_type"),
    [
        ("app/uninstalled", "shopify.app.uninstalled"),
        ("customers/data_request", "shopify.customers.data_request"),
        ("customer.tags_added", "shopify.customer.tags_added"),
    ],
)
async def test_the_topic_becomes_the_type(topic: str, event_type: str) -> None:
    assert (await accepted(webhook(topic=topic))).type == event_type


async def test_the_unprefixed_headers_are_accepted() -> None:
    event = await accepted(webhook(prefix=""))
    assert (event.type, event.id) == ("shopify.orders.create", WEBHOOK_ID)


async def test_both_secrets_verify_during_a_rotation() -> None:
    rotating = SourceConfig("shop", "shopify", secrets=("new-secret", SECRET))
    await accepted(webhook(), rotating)
    await accepted(webhook(secret="new-secret"), rotating)


async def test_an_unparseable_triggered_at_is_left_out() -> None:
    assert (await accepted(webhook(triggered_at="yesterday"))).time is None


# --- refusals -------------------------------------------------------------------------------------------------


async def test_a_missing_hmac_is_refused() -> None:
    headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": WEBHOOK_ID}
    request = InboundRequest("POST", "/hooks/shop", headers=Headers.of(headers), body=ORDER)
    await refused(request, 401, "X-Shopify-Hmac-SHA256")


@pytest.mark.parametrize("signature", ["not base64!", "AAAA", hashlib.sha256(ORDER).hexdigest()])
async def test_a_malformed_hmac_is_refused(signature: str) -> None:
    await refused(webhook(signature=signature), 401, "X-Shopify-Hmac-SHA256")


async def test_another_secret_is_refused_without_leaking_anything() -> None:
    result = await refused(webhook(secret="other"), 401, "X-Shopify-Hmac-SHA256")
    assert SECRET not in result.reason and mac(ORDER) not in result.reason


async def test_a_flipped_body_byte_is_refused() -> None:
    await refused(webhook(ORDER.replace(b"403", b"404"), signature=mac(ORDER)), 401, "X-Shopify-Hmac-SHA256")


async def test_a_missing_topic_is_refused() -> None:
    await refused(webhook(topic=None), 400, "X-Shopify-Topic")


async def test_a_topic_that_cannot_be_a_type_is_refused() -> None:
    await refused(webhook(topic="orders/create now"), 400, "X-Shopify-Topic")


async def test_a_missing_webhook_id_is_refused() -> None:
    await refused(webhook(webhook_id=None), 400, "X-Shopify-Webhook-Id")


async def test_malformed_json_is_refused() -> None:
    await refused(webhook(b'{"id": 1'), 400, "body")


async def test_invalid_utf8_is_refused() -> None:
    await refused(webhook(b'{"id": 1, "note": "\xfe"}'), 400, "body")


async def test_a_form_body_is_refused() -> None:
    await refused(webhook(b"id=1", content_type="application/x-www-form-urlencoded"), 400, "body")


async def test_a_form_body_sent_as_json_is_refused() -> None:
    await refused(webhook(b"id=1"), 400, "body")


async def test_an_xml_webhook_is_refused() -> None:
    result = await refused(webhook(b"<order><id>1</id></order>", content_type="application/xml"), 400, "body")
    assert "JSON format" in result.reason


def test_options_are_refused_naming_the_field() -> None:
    assert ShopifyConnector().validate_options({}) == {}
    with pytest.raises(InvalidArgumentError) as caught:
        ShopifyConnector().validate_options({"shop": "x"})
    assert caught.value.violations[0].field == "options.shop"
