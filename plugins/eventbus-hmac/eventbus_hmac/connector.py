"""The generic HMAC connector: each source says which header, algorithm, encoding and signed string to check."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_json_media_type, is_valid_type
from eventbus.plugin import (
    Accepted,
    ConnectorResult,
    InboundRequest,
    Refused,
    SourceConfig,
    media_type,
    parse_json,
    signed_by_any,
)
from eventbus_hmac.settings import Settings, parse_settings

__all__ = ["HmacConnector"]

_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}


class HmacConnector:
    """Verifies `<prefix><hex|base64 HMAC>` over a signed-string template, for providers without a connector."""

    name = "hmac"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return parse_settings(options).options()

    def secret_headers(self, options: Mapping[str, object]) -> list[str]:
        """The configured signature header holds a credential whatever its name: the gateway redacts it."""
        header = options.get("header")
        return [header] if isinstance(header, str) else []

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        try:
            settings = parse_settings(source.options)
        except InvalidArgumentError as exc:
            # Options are checked when the source is saved: this is the server's fault, not the sender's.
            raise RuntimeError(f"source {source.name!r} has invalid hmac options: {exc.message}") from None
        verified = _verify(request, settings, source.secrets, now)
        if verified is not None:
            return verified
        payload = _body(request, settings)
        if isinstance(payload, Refused):
            return payload
        suffix = _type(request, settings, payload)
        if isinstance(suffix, Refused):
            return suffix
        event_id = _id(request, settings, payload)
        if isinstance(event_id, Refused):
            return event_id
        content_type = (request.header("Content-Type") or "").strip() or None
        if payload is not None and (content_type is None or not is_json_media_type(content_type)):
            content_type = "application/json"
        try:
            event = Event.create(
                type=f"{self.name}.{suffix}",
                source=source.event_source,
                id=event_id,
                subject=_scalar(_lookup(payload, settings.subject_field)) if settings.subject_field else None,
                data=request.body,
                datacontenttype=content_type,
            )
        except PayloadTooLargeError as exc:
            return Refused(413, exc.message, field="body")
        except InvalidArgumentError as exc:
            return Refused.bad_request(f"the request is not a valid event: {exc.message}", field="body")
        return Accepted([event], dedup_key=event_id)


def _verify(request: InboundRequest, settings: Settings, secrets: tuple[str, ...], now: datetime) -> Refused | None:
    value = request.header(settings.header)
    if not value:
        return Refused.unauthorized(f"missing {settings.header} header", field=settings.header)
    timestamp = ""
    if settings.timestamp_header is not None:
        timestamp = (request.header(settings.timestamp_header) or "").strip()
        refusal = _check_timestamp(timestamp, settings, now)
        if refusal is not None:
            return refusal
    given = _decode(value.strip(), settings)
    if given is None:
        shape = "hex digits" if settings.encoding == "hex" else "standard base64"
        return Refused.unauthorized(
            f"{settings.header} must be {settings.prefix!r} followed by the HMAC-{settings.algorithm.upper()} "
            f"in {shape}",
            field=settings.header,
        )
    message = _signed_string(settings, request.body, timestamp)
    if not signed_by_any(secrets, message, [given], algorithm=settings.algorithm):  # two secrets during a rotation
        return Refused.unauthorized(
            f"{settings.header} does not match: the request was not signed with this source's secret (or its body "
            "or timestamp changed on the way)",
            field=settings.header,
        )
    return None


def _signed_string(settings: Settings, body: bytes, timestamp: str) -> bytes:
    """The `signed` template filled in: the literals as UTF-8, `{timestamp}` as sent, `{body}` as raw bytes."""
    parts: list[bytes] = []
    for literal, name in settings.pieces:
        parts.append(literal.encode("utf-8"))
        if name == "body":
            parts.append(body)
        elif name == "timestamp":
            parts.append(timestamp.encode("ascii"))
    return b"".join(parts)


def _check_timestamp(timestamp: str, settings: Settings, now: datetime) -> Refused | None:
    field = settings.timestamp_header
    assert field is not None and settings.tolerance is not None
    if not timestamp:
        return Refused.unauthorized(f"missing {field} header", field=field)
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return Refused.unauthorized(f"{field} must be integer Unix seconds", field=field)
    skew = int(timestamp) - now.timestamp()
    if skew < -settings.tolerance:
        return Refused.unauthorized(
            f"{field} is {int(-skew)} s old, outside the ±{settings.tolerance} s tolerance (a replay, or a clock "
            "that is off)",
            field=field,
        )
    if skew > settings.tolerance:
        return Refused.unauthorized(
            f"{field} is {int(skew)} s in the future, outside the ±{settings.tolerance} s tolerance", field=field
        )
    return None


def _decode(value: str, settings: Settings) -> bytes | None:
    """The signature's bytes, or None when the value is not `<prefix><encoded digest>` of the right length."""
    if value[: len(settings.prefix)].lower() != settings.prefix.lower():
        return None
    encoded = value[len(settings.prefix) :]
    try:
        raw = bytes.fromhex(encoded) if settings.encoding == "hex" else base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if settings.encoding != "hex" and base64.b64encode(raw).decode() != encoded:
        return None  # other unused bits in the last character: the same bytes under another spelling
    return raw if len(raw) == _DIGEST_SIZES[settings.algorithm] else None


def _body(request: InboundRequest, settings: Settings) -> dict[str, Any] | Refused | None:
    """The JSON object when the body is JSON (or must be, to read a field); None for other bodies, kept as bytes."""
    essence = media_type(request)
    is_json = is_json_media_type(essence)
    if not is_json and not settings.needs_json:
        return None
    if essence and not is_json:
        return Refused.bad_request(
            f"Content-Type {essence!r} is not JSON, and this source reads fields of a JSON body", field="body"
        )
    payload = parse_json(request.body)  # any charset parameter is not checked: the bytes must be UTF-8 JSON
    if isinstance(payload, Refused):
        return payload
    if not isinstance(payload, dict):
        if settings.needs_json:
            return Refused.bad_request("body must be a JSON object", field="body")
        return {}  # valid JSON that no field is read from: an empty object stands for "the body is JSON"
    return payload


def _type(request: InboundRequest, settings: Settings, payload: dict[str, Any] | None) -> str | Refused:
    """The type suffix: from `type_header` or `type_field` ('/' read as '.'), else the fixed `type`."""
    found: object = None
    field = "type"
    if settings.type_header is not None:
        found, field = request.header(settings.type_header), settings.type_header
    elif settings.type_field is not None:
        found, field = _lookup(payload, settings.type_field), "body." + ".".join(settings.type_field)
    if isinstance(found, str) and found:
        suffix = found.strip().replace("/", ".")
        if is_valid_type(suffix):
            return suffix
        return Refused.bad_request(
            f"{field} must be an event type: segments of [A-Za-z0-9_-] separated by '.' or '/'", field=field
        )
    if settings.type is not None:
        return settings.type
    return Refused.bad_request(f"{field} is missing: it names the event type", field=field)


def _id(request: InboundRequest, settings: Settings, payload: dict[str, Any] | None) -> str | Refused:
    """The delivery id: from `id_header` or `id_field`, else the SHA-256 of the body (hex)."""
    if settings.id_header is not None:
        value = (request.header(settings.id_header) or "").strip()
        if not value:
            return Refused.bad_request(
                f"missing {settings.id_header} header (the delivery id)", field=settings.id_header
            )
        return value
    if settings.id_field is not None:
        found = _scalar(_lookup(payload, settings.id_field))
        if found is None:
            field = "body." + ".".join(settings.id_field)
            return Refused.bad_request(f"{field} must be the delivery id (a string or an integer)", field=field)
        return found
    return hashlib.sha256(request.body).hexdigest()


def _lookup(payload: object, path: tuple[str, ...] | None) -> object:
    """The value at a dotted path (list items by index), or None."""
    current = payload
    for segment in path or ():
        if isinstance(current, dict):
            current = current.get(segment)
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            return None
    return current


def _scalar(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
