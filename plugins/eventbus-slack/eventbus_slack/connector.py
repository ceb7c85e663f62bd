"""The Slack connector: v0 request signatures (±300 s), URL verification, Events API, slash commands, interactivity."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_json_media_type, is_valid_type
from eventbus.plugin import (
    Accepted,
    ConnectorResult,
    CustomResponse,
    InboundRequest,
    Refused,
    SourceConfig,
    body_text,
    media_type,
    no_options,
    parse_form,
    parse_json,
    signed_by_any,
)

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "TOLERANCE_SECONDS", "SlackConnector"]

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
TOLERANCE_SECONDS = 300
_SIGNATURE = re.compile(r"v0=([0-9a-fA-F]{64})")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_FORM = "application/x-www-form-urlencoded"


class SlackConnector:
    """Verifies Slack's signing secret over `v0:{timestamp}:{body}`; one event per Events API event or command."""

    name = "slack"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return no_options(self.name, options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        verified = _verify(request, source.secrets, now)
        if isinstance(verified, Refused):
            return verified
        essence = media_type(request)
        text = body_text(request)
        if isinstance(text, Refused):
            return text
        if essence == _FORM:
            pairs = parse_form(text)
            if isinstance(pairs, Refused):
                return pairs
            return _form(request, pairs, source, verified)
        if essence and not is_json_media_type(essence):
            return Refused.bad_request(
                f"Content-Type {essence!r} is not supported: Slack sends application/json (Events API) or {_FORM} "
                "(slash commands, interactivity)",
                field="body",
            )
        payload = parse_json(text)
        if isinstance(payload, Refused):
            return payload
        if not isinstance(payload, dict):
            return Refused.bad_request("body must be a JSON object", field="body")
        return _events_api(request, payload, source)


def _verify(request: InboundRequest, secrets: tuple[str, ...], now: datetime) -> int | Refused:
    """The request's timestamp when the signature matches one of the signing secrets, else the refusal."""
    timestamp = (request.header(TIMESTAMP_HEADER) or "").strip()
    if not timestamp:
        return Refused.unauthorized(f"missing {TIMESTAMP_HEADER} header", field=TIMESTAMP_HEADER)
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return Refused.unauthorized(f"{TIMESTAMP_HEADER} must be integer Unix seconds", field=TIMESTAMP_HEADER)
    signature = request.header(SIGNATURE_HEADER)
    if not signature:
        return Refused.unauthorized(f"missing {SIGNATURE_HEADER} header", field=SIGNATURE_HEADER)
    skew = int(timestamp) - now.timestamp()
    if skew < -TOLERANCE_SECONDS:
        return Refused.unauthorized(
            f"{TIMESTAMP_HEADER} is {int(-skew)} s old, outside the ±{TOLERANCE_SECONDS} s tolerance (a replay, "
            "or a clock that is off)",
            field=TIMESTAMP_HEADER,
        )
    if skew > TOLERANCE_SECONDS:
        return Refused.unauthorized(
            f"{TIMESTAMP_HEADER} is {int(skew)} s in the future, outside the ±{TOLERANCE_SECONDS} s tolerance",
            field=TIMESTAMP_HEADER,
        )
    match = _SIGNATURE.fullmatch(signature.strip())
    if match is None:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} must be 'v0=' followed by 64 hex digits", field=SIGNATURE_HEADER
        )
    base = b"v0:" + timestamp.encode("ascii") + b":" + request.body
    if not signed_by_any(secrets, base, [match.group(1).lower()]):  # every active secret: two during a rotation
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} does not match: the request was not signed with this source's signing secret "
            "(or its timestamp or body changed on the way)",
            field=SIGNATURE_HEADER,
        )
    return int(timestamp)


def _events_api(request: InboundRequest, payload: dict[str, Any], source: SourceConfig) -> ConnectorResult:
    kind = payload.get("type")
    if kind == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            return Refused.bad_request("body.challenge must be the string to echo", field="body.challenge")
        return CustomResponse.json({"challenge": challenge})
    if kind == "event_callback":
        inner = payload.get("event")
        event_type = inner.get("type") if isinstance(inner, dict) else None
        if not (isinstance(event_type, str) and is_valid_type(event_type)):
            return Refused.bad_request("body.event.type must be the Slack event type", field="body.event.type")
        event_id = payload.get("event_id")
        if not (isinstance(event_id, str) and event_id):
            return Refused.bad_request("body.event_id must be the event's id (Ev...)", field="body.event_id")
        assert isinstance(inner, dict)
        return _accept(
            source,
            event_type=f"slack.{event_type}",
            event_id=event_id,
            subject=_channel(inner),
            time=_unix(payload.get("event_time")),
            data=request.body,
        )
    if isinstance(kind, str) and _SEGMENT.fullmatch(kind):  # other envelopes, e.g. app_rate_limited
        digest = hashlib.sha256(request.body).hexdigest()
        return _accept(source, event_type=f"slack.{kind}", event_id=digest, subject=None, time=None, data=request.body)
    return Refused.bad_request("body.type must be the envelope type (e.g. event_callback)", field="body.type")


def _form(
    request: InboundRequest, pairs: list[tuple[str, str]], source: SourceConfig, timestamp: int
) -> ConnectorResult:
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    # A body's digest is its id: Slack does not retry commands and interactions, so each delivery is one request.
    digest = hashlib.sha256(request.body).hexdigest()
    if "payload" in fields:
        payload = parse_json(fields["payload"])
        if isinstance(payload, Refused):
            return Refused.bad_request(f"the form's payload field: {payload.reason}", field="body.payload")
        kind = payload.get("type") if isinstance(payload, dict) else None
        if not (isinstance(kind, str) and _SEGMENT.fullmatch(kind)):
            return Refused.bad_request("payload.type must be the interaction type", field="body.payload")
        assert isinstance(payload, dict)
        channel = payload.get("channel")
        return _accept(
            source,
            event_type=f"slack.interaction.{kind}",
            event_id=digest,
            subject=_string(channel.get("id")) if isinstance(channel, dict) else None,
            time=_unix(timestamp),
            data=fields["payload"].encode("utf-8"),
        )
    if "command" in fields:
        command = fields["command"].removeprefix("/")
        if not _SEGMENT.fullmatch(command):
            return Refused.bad_request(
                "command must be '/' followed by letters, digits, '_' or '-'", field="body.command"
            )
        return _accept(
            source,
            event_type=f"slack.command.{command}",
            event_id=digest,
            subject=_string(fields.get("channel_id")),
            time=_unix(timestamp),
            data=fields,
        )
    return Refused.bad_request(
        "form body has neither a command (slash command) nor a payload (interactivity) field", field="body"
    )


def _accept(
    source: SourceConfig, *, event_type: str, event_id: str, subject: str | None, time: datetime | None, data: object
) -> ConnectorResult:
    try:
        event = Event.create(
            type=event_type,
            source=source.event_source,
            id=event_id,
            subject=subject,
            time=time,
            data=data,
            datacontenttype="application/json",
        )
    except PayloadTooLargeError as exc:
        return Refused(413, exc.message, field="body")
    except InvalidArgumentError as exc:
        return Refused.bad_request(f"the request is not a valid event: {exc.message}", field="body")
    # Slack retries an event (X-Slack-Retry-Num) with the same event_id: the gateway answers it from the first.
    return Accepted([event], dedup_key=event_id)


def _channel(inner: dict[str, Any]) -> str | None:
    """The conversation the event happened in: `event.channel`, or `event.item.channel` (reactions, pins)."""
    channel = inner.get("channel")
    if isinstance(channel, dict):  # channel_created and the like carry the channel object
        channel = channel.get("id")
    if channel is None and isinstance(inner.get("item"), dict):
        channel = inner["item"].get("channel")
    return _string(channel)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _unix(value: object) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
