"""The Shopify connector: `X-Shopify-Hmac-SHA256` verified, one `shopify.<topic>` event per webhook."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_json_media_type, is_valid_type, parse_rfc3339
from eventbus.plugin import Accepted, ConnectorResult, InboundRequest, Refused, SourceConfig
from eventbus.signing import constant_time_equals, hmac_sha256

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
        if options:
            raise InvalidArgumentError.for_field(
                f"options.{min(options)}", "unknown option: the shopify connector takes none"
            )
        return {}

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
        payload = _json_body(request)
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
    if len(given) != 32:
        return Refused.unauthorized(f"{HMAC_HEADER} must be a base64 HMAC-SHA256 (32 bytes)", field=HMAC_HEADER)
    matched = False
    for secret in secrets:  # two during a rotation: Shopify may take an hour to switch to a new client secret
        matched |= constant_time_equals(hmac_sha256(secret.encode("utf-8"), request.body), given)
    if not matched:
        return Refused.unauthorized(
            f"{HMAC_HEADER} does not match: the body was not signed with this source's secret (the app's client "
            "secret) or was changed on the way",
            field=HMAC_HEADER,
        )
    return None


def _json_body(request: InboundRequest) -> Any | Refused:
    content_type = request.header("Content-Type") or ""
    essence, _, parameters = content_type.partition(";")
    essence = essence.strip().lower()
    if essence and not is_json_media_type(essence):
        return Refused.bad_request(
            f"Content-Type {essence!r} is not supported: subscribe the webhook in JSON format", field="body"
        )
    charset = _charset(parameters)
    if charset not in (None, "utf-8", "utf8"):
        return Refused.bad_request(f"Content-Type charset {charset!r} is not supported: send UTF-8", field="body")
    try:
        return json.loads(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        return Refused.bad_request("body is not valid UTF-8", field="body")
    except RecursionError:
        return Refused.bad_request("body is not valid JSON: nested too deeply", field="body")
    except ValueError as exc:
        return Refused.bad_request(f"body is not valid JSON: {exc}", field="body")


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
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
