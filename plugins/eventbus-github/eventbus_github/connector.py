"""The GitHub connector: `X-Hub-Signature-256` verified, one `github.<event>[.<action>]` event per delivery."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event, is_json_media_type
from eventbus.plugin import Accepted, ConnectorResult, InboundRequest, Refused, SourceConfig
from eventbus.signing import constant_time_equals, hmac_sha256

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
        if options:
            raise InvalidArgumentError.for_field(
                f"options.{min(options)}", "unknown option: the github connector takes none"
            )
        return {}

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
    given = match.group(1).lower()
    # Every active secret is tried (two during a rotation); the compare is constant-time.
    matched = False
    for secret in secrets:
        expected = hmac_sha256(secret.encode("utf-8"), request.body).hex()
        matched |= constant_time_equals(expected, given)
    if not matched:
        return Refused.unauthorized(
            f"{SIGNATURE_HEADER} does not match: the body was not signed with this source's secret "
            "(or was changed on the way)",
            field=SIGNATURE_HEADER,
        )
    return None


def _payload(request: InboundRequest) -> tuple[bytes, dict[str, Any]] | Refused:
    """The JSON payload's bytes and value, from an `application/json` body or a form's `payload` field."""
    content_type = request.header("Content-Type") or ""
    essence, _, parameters = content_type.partition(";")
    essence = essence.strip().lower()
    charset = _charset(parameters)
    if charset not in (None, "utf-8", "utf8"):
        return Refused.bad_request(f"Content-Type charset {charset!r} is not supported: send UTF-8", field="body")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return Refused.bad_request("body is not valid UTF-8", field="body")
    if essence == _FORM:
        try:
            fields = urllib.parse.parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=1000)
        except ValueError as exc:
            return Refused.bad_request(f"form body cannot be parsed: {exc}", field="body")
        if len(fields.get("payload", ())) != 1:
            return Refused.bad_request(
                "form body must have one 'payload' field holding the JSON payload (GitHub's form content type)",
                field="body",
            )
        text = fields["payload"][0]
    elif essence and not is_json_media_type(essence):
        return Refused.bad_request(
            f"Content-Type {essence!r} is not supported: GitHub sends application/json or {_FORM}", field="body"
        )
    try:
        payload = json.loads(text)
    except RecursionError:
        return Refused.bad_request("body is not valid JSON: nested too deeply", field="body")
    except ValueError as exc:
        return Refused.bad_request(f"body is not valid JSON: {exc}", field="body")
    if not isinstance(payload, dict):
        return Refused.bad_request("body must be a JSON object", field="body")
    return (request.body if essence != _FORM else text.encode("utf-8")), payload


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


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
