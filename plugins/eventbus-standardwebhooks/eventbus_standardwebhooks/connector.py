"""The Standard Webhooks connector: `webhook-*` headers verified (v1 HMAC, v1a ed25519), one event per message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError, UnauthenticatedError
from eventbus.model import DataKind, Event, dumps_json, is_valid_type, parse_rfc3339, validate_event
from eventbus.plugin import Accepted, ConnectorResult, InboundRequest, Refused, SourceConfig, json_body
from eventbus.signing import SECRET_PREFIX, parse_public_key, parse_secret, verify_standard_webhook

__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE", "StandardWebhooksConnector"]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
TOLERANCE = timedelta(minutes=5)  # what every reference library uses; the spec gives no number
_OPTIONS = ("public_keys", "type")


class StandardWebhooksConnector:
    """Verifies Standard Webhooks (`v1` with the source's `whsec_` secrets, `v1a` with its trusted public keys)."""

    name = "standardwebhooks"

    def validate_secrets(self, secrets: list[str]) -> None:
        """Standard Webhooks secrets are `whsec_` + base64 of 24-64 bytes: anything else could never verify."""
        for index, secret in enumerate(secrets):
            parse_secret(secret, f"secrets[{index}]")

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        for key in options:
            if key not in _OPTIONS:
                raise InvalidArgumentError.for_field(
                    f"options.{key}", f"unknown option; the standardwebhooks connector takes {', '.join(_OPTIONS)}"
                )
        normalised: dict[str, object] = {}
        if options.get("public_keys") is not None:
            normalised["public_keys"] = _public_keys(options["public_keys"])
        if options.get("type") is not None:
            fallback = options["type"]
            if not isinstance(fallback, str) or not is_valid_type(fallback):
                raise InvalidArgumentError.for_field(
                    "options.type", "an event type suffix: segments of [A-Za-z0-9_-] separated by '.'"
                )
            normalised["type"] = fallback
        return normalised

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        headers: dict[str, str] = {}
        for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
            value = request.header(name)
            if not value:
                return Refused.unauthorized(f"missing {name} header", field=name)
            headers[name] = value
        refusal = _check_timestamp(headers[TIMESTAMP_HEADER], now)
        if refusal is not None:
            return refusal
        secrets = _usable_secrets(source.secrets)
        public_keys = _public_keys(source.options.get("public_keys") or [])
        if not secrets and not public_keys:
            return Refused.unauthorized(
                f"this source has no {SECRET_PREFIX} secret or public key to verify with", field=SIGNATURE_HEADER
            )
        try:
            msg_id = verify_standard_webhook(
                headers, request.body, secrets=secrets, public_keys=public_keys, now=now, tolerance=TOLERANCE
            )
        except UnauthenticatedError:
            return Refused.unauthorized(
                f"no {SIGNATURE_HEADER} entry matched: the message was not signed with this source's secret or "
                "key (or its id, timestamp or body changed on the way)",
                field=SIGNATURE_HEADER,
            )
        payload = json_body(request, hint="this connector takes application/json")
        if isinstance(payload, Refused):
            return payload
        return _accept(msg_id, payload, source)


def _public_keys(value: object) -> list[str]:
    """A list of `whpk_` keys; one string may hold several, separated by spaces or commas (`--option K=V`)."""
    keys = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(keys, list | tuple) or not all(isinstance(key, str) for key in keys):
        raise InvalidArgumentError.for_field("options.public_keys", "a list of whpk_ ed25519 public keys")
    for index, key in enumerate(keys):
        parse_public_key(key, field=f"options.public_keys[{index}]")
    return list(keys)


def _usable_secrets(secrets: tuple[str, ...]) -> list[bytes]:
    """The key bytes of the `whsec_` secrets; anything else cannot sign a Standard Webhook and is skipped."""
    usable = []
    for secret in secrets:
        try:
            usable.append(parse_secret(secret))
        except InvalidArgumentError:
            continue
    return usable


def _check_timestamp(raw: str, now: datetime) -> Refused | None:
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return Refused.unauthorized(f"{TIMESTAMP_HEADER} must be integer Unix seconds", field=TIMESTAMP_HEADER)
    skew = int(text) - now.timestamp()
    limit = TOLERANCE.total_seconds()
    if skew < -limit:
        return Refused.unauthorized(
            f"{TIMESTAMP_HEADER} is {int(-skew)} s old, outside the ±{int(limit)} s tolerance (a replay, or a "
            "clock that is off)",
            field=TIMESTAMP_HEADER,
        )
    if skew > limit:
        return Refused.unauthorized(
            f"{TIMESTAMP_HEADER} is {int(skew)} s in the future, outside the ±{int(limit)} s tolerance (check the "
            "sender's clock)",
            field=TIMESTAMP_HEADER,
        )
    return None


def _accept(msg_id: str, payload: Any, source: SourceConfig) -> ConnectorResult:
    envelope = payload if isinstance(payload, dict) else {}
    kind = envelope.get("type")
    if not (isinstance(kind, str) and is_valid_type(kind)):
        fallback = source.options.get("type")
        if not isinstance(fallback, str):
            return Refused.bad_request(
                "body.type is missing or not an event type (segments of [A-Za-z0-9_-] separated by '.'); set the "
                "source's `type` option to accept such messages",
                field="body.type",
            )
        kind = fallback
    data = envelope.get("data", payload)
    try:
        event = Event(
            id=msg_id,
            source=source.event_source,
            type=f"standardwebhooks.{kind}",
            subject=_subject(data),
            time=_time(envelope.get("timestamp")),
            datacontenttype="application/json",
            data=dumps_json(data),
            data_kind=DataKind.JSON,
        )
        validate_event(event)
    except PayloadTooLargeError as exc:
        return Refused(413, exc.message, field="body")
    except InvalidArgumentError as exc:
        return Refused.bad_request(f"the message is not a valid event: {exc.message}", field="body")
    return Accepted([event], dedup_key=msg_id)


def _subject(data: Any) -> str | None:
    """`data.id` (the recommended payload's object id) when it is a string or an integer."""
    object_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(object_id, str) and object_id:
        return object_id
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        return str(object_id)
    return None


def _time(value: object) -> datetime | None:
    """The payload's `timestamp` (when the event occurred) if it is RFC 3339; anything else is left out."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value)
    except InvalidArgumentError:
        return None
