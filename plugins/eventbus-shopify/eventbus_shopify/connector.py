"""The Shopify connector: `X-Shopify-Hmac-SHA256` verified, one `shopify.<topic>` event per webhook."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_valid_type, parse_rfc3339
from eventbus.plugin import (
    Accepted,
    ConnectorResult,
    InboundRequest,
    Refused,
    SourceConfig,
    json_body,
    no_options,
    signed_by_any,
)

__all__ = ["HMAC_HEADER", "TOPIC_HEADER", "WEBHOOK_ID_HEADER", "ShopifyConnector"]

HMAC_HEADER = "X-Shopify-Hmac-SHA256"
TOPIC_HEADER = "X-Shopify-Topic"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
SHOP_DOMAIN_HEADER = "X-Shopify-Shop-Domain"
TRIGGERED_AT_HEADER = "X-Shopify-Triggered-At"


def _header(request: InboundRequest, name: str) -> str | None:
    """`X-Shopify-*`, or its unprefixed `Shopify-*` form (Shopify's newer Events deliveries)."""
    value = request.header(name)
    if value is None:
        value = request.header(name.removeprefix("X-"))
    return value.strip() if value is not None else None


class ShopifyConnector:
    """Verifies the base64 HMAC-SHA256 of the raw body, keyed with the app's client secret (the source's secret)."""

    name = "shopify"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return no_options(self.name, options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        refusal = _verify(request, source.secrets)
        if refusal is not None:
            return refusal
        topic = _header(request, TOPIC_HEADER)
        if not topic:
            return Refused.bad_request(f"missing {TOPIC_HEADER} header (e.g. orders/create)", field=TOPIC_HEADER)
        suffix = topic.replace("/", ".")
        if not is_valid_type(suffix):
            return Refused.bad_request(
                f"{TOPIC_HEADER} must be segments of [A-Za-z0-9_-] separated by '/' (e.g. orders/create)",
                field=TOPIC_HEADER,
            )
        webhook_id = _header(request, WEBHOOK_ID_HEADER)
        if not webhook_id:
            return Refused.bad_request(f"missing {WEBHOOK_ID_HEADER} header", field=WEBHOOK_ID_HEADER)
        payload = json_body(request, hint="subscribe the webhook in JSON format")
        if isinstance(payload, Refused):
            return payload
        shop = _header(request, SHOP_DOMAIN_HEADER)
        try:
            event = Event.create(
                type=f"{self.name}.{suffix}",
                source=source.event_source,
                id=webhook_id,
                subject=_subject(payload),
                time=_triggered_at(_header(request, TRIGGERED_AT_HEADER)),
                data=request.body,
                datacontenttype="application/json",
                extensions={"shopifyshopdomain": shop} if shop else None,
            )
        except PayloadTooLargeError as exc:
            return Refused(413, exc.message, field="body")
        except InvalidArgumentError as exc:
            return Refused.bad_request(f"the webhook is not a valid event: {exc.message}", field="body")
        return Accepted([event], dedup_key=webhook_id)


def _verify(request: InboundRequest, secrets: tuple[str, ...]) -> Refused | None:
    value = _header(request, HMAC_HEADER)
    if not value:
        return Refused.unauthorized(f"missing {HMAC_HEADER} header", field=HMAC_HEADER)
    try:
        given = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return Refused.unauthorized(f"{HMAC_HEADER} must be standard base64", field=HMAC_HEADER)
    # A canonical spelling only: other unused bits in the last character decode to the same 32 bytes.
    if len(given) != 32 or base64.b64encode(given).decode() != value:
        return Refused.unauthorized(f"{HMAC_HEADER} must be a base64 HMAC-SHA256 (32 bytes)", field=HMAC_HEADER)
    # Every active secret: two during a rotation, as Shopify may take an hour to switch to a new client secret.
    if not signed_by_any(secrets, request.body, [given]):
        return Refused.unauthorized(
            f"{HMAC_HEADER} does not match: the body was not signed with this source's secret (the app's client "
            "secret) or was changed on the way",
            field=HMAC_HEADER,
        )
    return None


def _subject(payload: Any) -> str | None:
    """The body's `id` (the order, product, customer...): Shopify's ids are integers, kept as their digits."""
    object_id = payload.get("id") if isinstance(payload, dict) else None
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        return str(object_id)
    return object_id if isinstance(object_id, str) and object_id else None


def _triggered_at(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_rfc3339(value)
    except InvalidArgumentError:
        return None
