"""The Stripe connector: `Stripe-Signature` verified (300 s tolerance, every `v1`), one `stripe.<type>` event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
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

__all__ = ["SIGNATURE_HEADER", "TOLERANCE_SECONDS", "StripeConnector"]

SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = 300  # stripe-python's DEFAULT_TOLERANCE
# The header is the sender's: bound the HMAC compares it can make us do (Stripe sends one or two v1).
_MAX_SIGNATURES = 8


class StripeConnector:
    """Verifies `Stripe-Signature: t=...,v1=...` with the endpoint secret used as a UTF-8 string, `whsec_` included."""

    name = "stripe"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return no_options(self.name, options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        refusal = _verify(request, source.secrets, now)
        if refusal is not None:
            return refusal
        payload = _json_object(request)
        if isinstance(payload, Refused):
            return payload
        event_type = payload.get("type")
        if not (isinstance(event_type, str) and is_valid_type(event_type)):
            return Refused.bad_request(
                "body.type must be the Stripe event type (e.g. payment_intent.succeeded)", field="body.type"
            )
        event_id = payload.get("id")
        if not (isinstance(event_id, str) and event_id):
            return Refused.bad_request("body.id must be the Stripe event id (evt_...)", field="body.id")
        try:
            event = Event.create(
                type=f"{self.name}.{event_type}",
                source=source.event_source,
                id=event_id,
                subject=_subject(payload),
                time=_created(payload.get("created")),
                data=request.body,
                datacontenttype="application/json",
            )
        except PayloadTooLargeError as exc:
            return Refused(413, exc.message, field="body")
        except InvalidArgumentError as exc:
            return Refused.bad_request(f"the event is not a valid event: {exc.message}", field="body")
        return Accepted([event], dedup_key=event_id)


def _verify(request: InboundRequest, secrets: tuple[str, ...], now: datetime) -> Refused | None:
    header = request.header(SIGNATURE_HEADER)
    if not header:
        return Refused.unauthorized(f"missing {SIGNATURE_HEADER} header", field=SIGNATURE_HEADER)
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            timestamp = value.strip()
        elif key == "v1" and len(signatures) < _MAX_SIGNATURES:
            signatures.append(value.strip().lower())
        # Other schemes (v0: test-mode legacy) are ignored, as stripe-python does.
    if timestamp is None or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} has no t= timestamp in integer Unix seconds", field=SIGNATURE_HEADER
        )
    if not signatures:
        return Refused.unauthorized(f"{SIGNATURE_HEADER} has no v1= signature", field=SIGNATURE_HEADER)
    skew = int(timestamp) - now.timestamp()
    if skew < -TOLERANCE_SECONDS:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} timestamp is {int(-skew)} s old, over the {TOLERANCE_SECONDS} s tolerance "
            "(a replay, or a clock that is off)",
            field=SIGNATURE_HEADER,
        )
    if skew > TOLERANCE_SECONDS:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} timestamp is {int(skew)} s in the future, over the {TOLERANCE_SECONDS} s tolerance "
            "(check the sender's clock)",
            field=SIGNATURE_HEADER,
        )
    signed_payload = timestamp.encode("ascii") + b"." + request.body
    # Every active secret (two during a rotation) against every v1: Stripe may send one per secret of its own.
    if not signed_by_any(secrets, signed_payload, signatures):
        return Refused.unauthorized(
            f"no v1 signature in {SIGNATURE_HEADER} matches: the event was not signed with this source's endpoint "
            "secret (whsec_..., used as is) or its body changed on the way",
            field=SIGNATURE_HEADER,
        )
    return None


def _json_object(request: InboundRequest) -> dict[str, Any] | Refused:
    payload = json_body(request, hint="Stripe sends application/json")
    if isinstance(payload, Refused):
        return payload
    if not isinstance(payload, dict):
        return Refused.bad_request("body must be a JSON object (a Stripe event)", field="body")
    return payload


def _subject(payload: dict[str, Any]) -> str | None:
    """`data.object.id` (the payment intent, invoice, ...); for a thin event, `related_object.id`."""
    data = payload.get("data")
    holder = data.get("object") if isinstance(data, dict) else None
    if not isinstance(holder, dict):
        holder = payload.get("related_object")
    object_id = holder.get("id") if isinstance(holder, dict) else None
    return object_id if isinstance(object_id, str) and object_id else None


def _created(value: object) -> datetime | None:
    """`created` (Unix seconds, or RFC 3339 on thin events) as the event's time; anything else is left out."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return parse_rfc3339(value)
        except InvalidArgumentError:
            return None
    return None
