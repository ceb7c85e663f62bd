"""The GitHub connector: `X-Hub-Signature-256` verified, one `github.<event>[.<action>]` event per delivery."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_json_media_type
from eventbus.plugin import (
    Accepted,
    ConnectorResult,
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

__all__ = ["DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "GitHubConnector"]

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_FORM = "application/x-www-form-urlencoded"
# The objects whose `number` narrows the subject from a repository to one issue, pull request or discussion.
_NUMBERED = ("pull_request", "issue", "discussion")


class GitHubConnector:
    """Verifies GitHub's `X-Hub-Signature-256` and turns each delivery (a `ping` too) into one event."""

    name = "github"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return no_options(self.name, options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        refusal = _verify_signature(request, source.secrets)
        if refusal is not None:
            return refusal
        parsed = _payload(request)
        if isinstance(parsed, Refused):
            return parsed
        raw, payload = parsed
        event_name = (request.header(EVENT_HEADER) or "").strip()
        if not _SEGMENT.fullmatch(event_name):
            return Refused.bad_request(
                f"{EVENT_HEADER} must name the event (letters, digits, '_' or '-')", field=EVENT_HEADER
            )
        delivery = (request.header(DELIVERY_HEADER) or "").strip()
        if not delivery:
            return Refused.bad_request(f"missing {DELIVERY_HEADER} header (the delivery's GUID)", field=DELIVERY_HEADER)
        event_type = f"{self.name}.{event_name}"
        action = payload.get("action")
        if isinstance(action, str):
            if not _SEGMENT.fullmatch(action):
                return Refused.bad_request("body.action must be letters, digits, '_' or '-'", field="body.action")
            event_type = f"{event_type}.{action}"
        try:
            event = Event.create(
                type=event_type,
                source=source.event_source,
                id=delivery,
                subject=_subject(payload),
                data=raw,
                datacontenttype="application/json",
            )
        except PayloadTooLargeError as exc:
            return Refused(413, exc.message, field="body")
        except InvalidArgumentError as exc:
            return Refused.bad_request(f"the delivery is not a valid event: {exc.message}", field="body")
        return Accepted([event], dedup_key=delivery)


def _verify_signature(request: InboundRequest, secrets: tuple[str, ...]) -> Refused | None:
    """None when `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under one of the active secrets."""
    value = request.header(SIGNATURE_HEADER)
    if not value:
        hint = " (the SHA-1 X-Hub-Signature is not accepted)" if request.header("X-Hub-Signature") else ""
        return Refused.unauthorized(
            f"missing {SIGNATURE_HEADER} header{hint}: set the webhook's secret on GitHub to this source's secret",
            field=SIGNATURE_HEADER,
        )
    match = _SIGNATURE.fullmatch(value.strip())
    if match is None:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} must be 'sha256=' followed by 64 hex digits", field=SIGNATURE_HEADER
        )
    # Every active secret is tried (two during a rotation); the compare is constant-time.
    if not signed_by_any(secrets, request.body, [match.group(1).lower()]):
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} does not match: the body was not signed with this source's secret "
            "(or was changed on the way)",
            field=SIGNATURE_HEADER,
        )
    return None


def _payload(request: InboundRequest) -> tuple[bytes, dict[str, Any]] | Refused:
    """The JSON payload's bytes and value, from an `application/json` body or a form's `payload` field."""
    essence = media_type(request)
    text = body_text(request)
    if isinstance(text, Refused):
        return text
    if essence == _FORM:
        pairs = parse_form(text)
        if isinstance(pairs, Refused):
            return pairs
        payloads = [value for key, value in pairs if key == "payload"]
        if len(payloads) != 1:
            return Refused.bad_request(
                "form body must have one 'payload' field holding the JSON payload (GitHub's form content type)",
                field="body",
            )
        text = payloads[0]
    elif essence and not is_json_media_type(essence):
        return Refused.bad_request(
            f"Content-Type {essence!r} is not supported: GitHub sends application/json or {_FORM}", field="body"
        )
    payload = parse_json(text)
    if isinstance(payload, Refused):
        return payload
    if not isinstance(payload, dict):
        return Refused.bad_request("body must be a JSON object", field="body")
    return (request.body if essence != _FORM else text.encode("utf-8")), payload


def _subject(payload: dict[str, Any]) -> str | None:
    """`owner/repo#number` for an issue, pull request or discussion; `owner/repo`; else the organization's login."""
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    if isinstance(full_name, str) and full_name:
        number = _number(payload)
        return f"{full_name}#{number}" if number is not None else full_name
    organization = payload.get("organization")
    login = organization.get("login") if isinstance(organization, dict) else None
    return login if isinstance(login, str) and login else None


def _number(payload: dict[str, Any]) -> int | None:
    candidates: list[object] = [payload.get("number")]
    for key in _NUMBERED:
        item = payload.get(key)
        if isinstance(item, dict):
            candidates.append(item.get("number"))
    for candidate in candidates:
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None
