"""The RD Station connector: a `?token=` in the registered URL verified; Marketing lead and CRM deal webhooks in.

RD Station signs nothing (reference/specs.md §3.4), so a source authenticates RD by the token in the URL it is
registered with at RD Station: `POST /hooks/<source>?token=<secret>`. The gateway keeps no query value of a
request, and this connector never copies the token into an event, a reason or an error.

Three bodies are understood:

- Marketing API 1.x (legacy) `{"leads": [...]}`: one `rdstation.lead.converted` per lead (`inbound_leads`);
- Marketing API 2.0 `{"event_type": "WEBHOOK.CONVERTED" | "WEBHOOK.MARKED_OPPORTUNITY", "contact": {...}}`:
  one `rdstation.lead.converted` / `rdstation.lead.opportunity`;
- RD Station CRM `{"event_name": "crm_deal_created", "document": {...}}`: one `rdstation.crm.deal_created`.
"""

from __future__ import annotations

import re
import secrets as secrets_module
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError, PayloadTooLargeError
from eventbus.model import Event
from eventbus.plugin import (
    Accepted,
    ConnectorResult,
    InboundRequest,
    Refused,
    SourceConfig,
    json_body,
    no_options,
)
from eventbus.signing import constant_time_equals
from eventbus_rdstation.inbound_common import (
    ID_PREFIX,
    BodyProblem,
    Draft,
    body_digest,
    digest_id,
    optional_object,
    optional_text,
    time_of,
)
from eventbus_rdstation.inbound_leads import lead_drafts

__all__ = ["CONTACT_TYPES", "MAX_REQUEST_EVENT_BYTES", "MIN_TOKEN_LENGTH", "TOKEN_PARAMETER", "RDStationConnector"]

TOKEN_PARAMETER = "token"
MIN_TOKEN_LENGTH = 16
# Marketing API 2.0 `event_type` → the event's type.
CONTACT_TYPES = {
    "WEBHOOK.CONVERTED": "rdstation.lead.converted",
    "WEBHOOK.MARKED_OPPORTUNITY": "rdstation.lead.opportunity",
}
# What one request may publish, as the core limits a publish batch: refused here as 413, not failed as a bug.
MAX_REQUEST_EVENT_BYTES = 16 * 1024 * 1024
_URL_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 3986: pasted into a URL as is, no escaping
_CRM_EVENT = re.compile(r"crm_([a-z0-9_]+)")
_SHAPES = (
    'RD Station\'s webhook bodies: {"leads": [...]} (Marketing API 1.x), {"event_type": "WEBHOOK.CONVERTED", '
    '"contact": {...}, ...} (Marketing API 2.0) or {"event_name": "crm_deal_updated", "document": {...}} '
    "(RD Station CRM)"
)


class RDStationConnector:
    """Checks the URL's `token` against the source's secrets; one event per lead, contact event or CRM deal event."""

    name = "rdstation"

    def generate_secret(self) -> str:
        """A token for a new source or a rotation: 43 URL-safe characters, pasted into RD Station's URL as is."""
        return secrets_module.token_urlsafe(32)

    def validate_secrets(self, secrets: list[str]) -> None:
        """A token is at least 16 characters of `[A-Za-z0-9._~-]`, so the registered URL works as pasted."""
        for index, secret in enumerate(secrets):
            field = f"secrets[{index}]"
            if len(secret) < MIN_TOKEN_LENGTH:
                raise InvalidArgumentError.for_field(
                    field, f"an RD Station token is at least {MIN_TOKEN_LENGTH} characters (give none: one is made)"
                )
            if not _URL_UNRESERVED.fullmatch(secret):
                raise InvalidArgumentError.for_field(
                    field, "a token goes in a URL: only letters, digits and . _ ~ - (give none: one is made)"
                )

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return no_options(self.name, options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        refusal = _check_token(request, source.secrets)
        if refusal is not None:
            return refusal
        payload = json_body(request, hint="RD Station sends application/json")
        if isinstance(payload, Refused):
            return payload
        if not isinstance(payload, dict):
            return Refused.bad_request(f"body must be a JSON object: one of {_SHAPES}", field="body")
        try:
            drafts, dedup_key = _drafts(payload, request.body, now)
            events = [draft.event(source.event_source) for draft in drafts]
        except BodyProblem as problem:
            return problem.refusal()
        except PayloadTooLargeError as exc:
            return Refused(413, exc.message, field="body")
        except InvalidArgumentError as exc:
            return Refused.bad_request(f"the webhook is not a valid event: {exc.message}", field="body")
        except RecursionError:
            return Refused.bad_request("body is nested too deeply", field="body")
        return _accepted(events, dedup_key)


def _check_token(request: InboundRequest, secrets: tuple[str, ...]) -> Refused | None:
    """None when the `token` query value is one of the source's secrets (every one is compared, in constant time)."""
    given = request.query_value(TOKEN_PARAMETER)
    if not given:
        return Refused.unauthorized(
            f"missing {TOKEN_PARAMETER} query parameter: register the URL at RD Station as "
            f"https://<gateway>/hooks/<source>?{TOKEN_PARAMETER}=<the source's token>",
            field=TOKEN_PARAMETER,
        )
    given_bytes = given.encode("utf-8", "surrogatepass")  # a query value never makes the compare raise
    matched = False
    for secret in secrets:  # no early exit: two secrets during a rotation, both compared
        matched |= constant_time_equals(given_bytes, secret.encode("utf-8", "surrogatepass"))
    if not matched:
        return Refused.unauthorized(
            f"the {TOKEN_PARAMETER} query parameter does not match this source's token: check the URL registered at "
            "RD Station (after a rotation, the previous token verifies for 24 h)",
            field=TOKEN_PARAMETER,
        )
    return None


def _drafts(payload: dict[str, Any], body: bytes, now: datetime) -> tuple[list[Draft], str]:
    """The drafts of the body's shape, and the request's dedup key; a `BodyProblem` when it is none of them."""
    shapes = [key for key in ("leads", "event_type", "event_name") if key in payload]
    if len(shapes) != 1:
        found = "several of leads, event_type, event_name" if shapes else "none of leads, event_type, event_name"
        raise BodyProblem("body", f"body has {found}: expected one of {_SHAPES}")
    if shapes == ["leads"]:
        return lead_drafts(payload, body, now)
    draft = _contact_draft(payload, body) if shapes == ["event_type"] else _crm_draft(payload, body, now)
    return [draft], draft.id


def _contact_draft(payload: dict[str, Any], body: bytes) -> Draft:
    """Marketing API 2.0: id from (event_type, contact.uuid, event_identifier, event_timestamp), not `timestamp`.

    `timestamp` is when RD sent the request, `event_timestamp` when the contact converted: a redelivery of the
    same conversion has the same id (and dedup key) whatever its `timestamp`.
    """
    event_type = payload.get("event_type")
    if not isinstance(event_type, str) or event_type not in CONTACT_TYPES:
        raise BodyProblem("body.event_type", f"body.event_type must be one of {', '.join(CONTACT_TYPES)}")
    contact = optional_object(payload, "contact", "body.contact", "the contact")
    uuid = contact.get("uuid") if contact is not None else None
    if not isinstance(uuid, str) or not uuid.strip():
        raise BodyProblem("body.contact.uuid", "body.contact.uuid must be the contact's uuid (a string)")
    identifier = optional_text(payload, "event_identifier", "body.event_identifier") or ""
    stamp = payload.get("event_timestamp")
    time = time_of(stamp)
    if time is None or not isinstance(stamp, str):
        raise BodyProblem(
            "body.event_timestamp",
            "body.event_timestamp must be when the event happened, RFC 3339 with an offset "
            "(2018-03-13T14:07:04.254-03:00)",
        )
    event_id = digest_id(event_type, uuid, identifier, stamp)
    return Draft(type=CONTACT_TYPES[event_type], id=event_id, subject=uuid, time=time, data=body)


def _crm_draft(payload: dict[str, Any], body: bytes, now: datetime) -> Draft:
    """RD Station CRM: `crm_<name>` → `rdstation.crm.<name>`; id from (event_name, document.id, updated_at)."""
    event_name = payload.get("event_name")
    if not isinstance(event_name, str):
        event_name = ""
    match = _CRM_EVENT.fullmatch(event_name)
    if match is None:
        raise BodyProblem(
            "body.event_name",
            "body.event_name must be crm_deal_created, crm_deal_updated, crm_deal_deleted (or another crm_<name>, "
            "<name> of [a-z0-9_])",
        )
    document = optional_object(payload, "document", "body.document", "the deal")
    object_id = document.get("id") if document is not None else None
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        object_id = str(object_id)
    if not isinstance(object_id, str) or not object_id.strip():
        raise BodyProblem("body.document.id", "body.document.id must be the deal's id (a string or an integer)")
    assert document is not None
    updated = document.get("updated_at")
    if isinstance(updated, str) and updated:
        event_id = digest_id(event_name, object_id, updated)
    else:  # nothing says which version of the deal this is: the same body is the same event
        event_id = ID_PREFIX + body_digest(body)
    # A deletion happened now; a creation or an update when the deal was last updated.
    time = (None if event_name == "crm_deal_deleted" else time_of(updated)) or now
    return Draft(type=f"rdstation.crm.{match.group(1)}", id=event_id, subject=object_id, time=time, data=body)


def _accepted(events: list[Event], dedup_key: str) -> ConnectorResult:
    size = sum(event.size() for event in events)
    if size > MAX_REQUEST_EVENT_BYTES:
        return Refused(
            413, f"the body makes {size} bytes of events; at most {MAX_REQUEST_EVENT_BYTES}: send fewer leads", "body"
        )
    return Accepted(events, dedup_key=dedup_key)
