"""RD Station Marketing API 1.x (legacy) webhooks: `{"leads": [...]}`, one `rdstation.lead.converted` per lead.

The legacy body writes booleans and numbers as strings (`"opportunity": "false"`, `"number_conversions": "3"`).
Only the fields named here are normalised, and only when the string is exactly `true`/`false` or a plain decimal
number: phones, ids, uuids, zip codes, names, form answers (`content`) and `custom_fields` are never touched.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

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

__all__ = [
    "BOOLEAN_FIELDS",
    "CONVERSION_NUMBER_FIELDS",
    "LEAD_NUMBER_FIELDS",
    "LEAD_TYPE",
    "MAX_LEADS",
    "canonical_json",
    "lead_drafts",
    "normalise_lead",
]

LEAD_TYPE = "rdstation.lead.converted"  # the body does not say which trigger (conversion or opportunity) fired
MAX_LEADS = 1000  # leads per body: also the most events one request may publish
BOOLEAN_FIELDS = frozenset({"opportunity"})  # on the lead
LEAD_NUMBER_FIELDS = frozenset({"number_conversions", "interest"})  # on the lead
CONVERSION_NUMBER_FIELDS = frozenset({"cumulative_sum"})  # on `first_conversion` and `last_conversion`
_CONVERSIONS = ("last_conversion", "first_conversion")  # where the identifier is looked for, in this order
_BOOLEANS = {"true": True, "false": False}
# A plain decimal number: an optional '-', no leading zeros, no exponent, no spaces, a bounded length.
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,14})\.[0-9]{1,6}")


def lead_drafts(payload: dict[str, Any], body: bytes, now: datetime) -> tuple[list[Draft], str]:
    """One draft per lead, and the request's dedup key (the SHA-256 of the body: RD sends no delivery id)."""
    leads = payload.get("leads")
    if not isinstance(leads, list) or not leads:
        raise BodyProblem("body.leads", "body.leads must be a non-empty array of leads (RD Station API 1.x webhook)")
    if len(leads) > MAX_LEADS:
        raise BodyProblem("body.leads", f"body.leads holds {len(leads)} leads; at most {MAX_LEADS} per request")
    digest = body_digest(body)
    return [_lead(lead, index, digest, now) for index, lead in enumerate(leads)], digest


def normalise_lead(lead: dict[str, Any], where: str = "lead") -> dict[str, Any]:
    """A copy of `lead` with the listed string booleans and numbers made JSON booleans and numbers.

    `first_conversion` / `last_conversion` and their `content` must be objects (or null): a `BodyProblem`
    naming `<where>.<field>` otherwise.
    """
    normalised = dict(lead)
    for key in BOOLEAN_FIELDS & normalised.keys():
        normalised[key] = _boolean(normalised[key])
    for key in LEAD_NUMBER_FIELDS & normalised.keys():
        normalised[key] = _number(normalised[key])
    for key in _CONVERSIONS:
        conversion = optional_object(lead, key, f"{where}.{key}", "a conversion")
        if conversion is None:
            continue
        optional_object(conversion, "content", f"{where}.{key}.content", "the converted form's fields")
        copy = dict(conversion)
        for name in CONVERSION_NUMBER_FIELDS & copy.keys():
            copy[name] = _number(copy[name])
        normalised[key] = copy
    return normalised


def _lead(lead: object, index: int, digest: str, now: datetime) -> Draft:
    where = f"body.leads[{index}]"
    if not isinstance(lead, dict):
        raise BodyProblem(where, f"{where} must be a JSON object (a lead)")
    subject = _subject(lead, where)
    normalised = normalise_lead(lead, where)
    identifier = _identifier(normalised, where)
    last = normalised.get("last_conversion")
    stamps = [last.get("created_at") if isinstance(last, dict) else None, normalised.get("created_at")]
    stamp = next((s for s in stamps if isinstance(s, str) and s), None)
    time = next((t for t in map(time_of, stamps) if t is not None), now)
    if stamp is not None:
        # The whole lead too: the "conversion" and "marked as opportunity" triggers (or an automation flow) send
        # the same lead and conversion with other fields (`opportunity`, `lead_stage`...). A lead sent again
        # unchanged is a duplicate; any change makes a new event.
        event_id = digest_id(subject, identifier or "", stamp, canonical_json(normalised))
    else:  # nothing says when the conversion happened: the body's digest, suffixed by the lead's place in it
        event_id = f"{ID_PREFIX}{digest}-{index}"
    data = {**normalised, "conversion_identifier": identifier}
    return Draft(type=LEAD_TYPE, id=event_id, subject=subject, time=time, data=data)


def canonical_json(value: object) -> str:
    """One text per JSON value, whatever the key order or spacing it was sent with."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _subject(lead: dict[str, Any], where: str) -> str:
    """The contact's `uuid`; for an old lead without one, its `id` (a string or an integer)."""
    uuid = optional_text(lead, "uuid", f"{where}.uuid")
    if uuid is not None and uuid.strip():
        return uuid
    lead_id = lead.get("id")
    if isinstance(lead_id, int) and not isinstance(lead_id, bool):
        return str(lead_id)
    if isinstance(lead_id, str) and lead_id.strip():
        return lead_id
    raise BodyProblem(f"{where}.uuid", f"{where} has no uuid (nor id): the contact it is about")


def _identifier(lead: dict[str, Any], where: str) -> str | None:
    """`last_conversion.content.identificador`, else `first_conversion.content.identificador`, else None."""
    for key in _CONVERSIONS:
        conversion = lead.get(key)
        content = conversion.get("content") if isinstance(conversion, dict) else None
        if isinstance(content, dict):
            found = optional_text(content, "identificador", f"{where}.{key}.content.identificador")
            if found is not None:
                return found
    return None


def _boolean(value: object) -> object:
    return _BOOLEANS.get(value, value) if isinstance(value, str) else value


def _number(value: object) -> object:
    if isinstance(value, str):
        if _INTEGER.fullmatch(value):
            return int(value)
        if _DECIMAL.fullmatch(value):
            return float(value)
    return value
