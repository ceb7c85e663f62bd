"""Shared pieces of the inbound `rdstation` connector: body problems, draft events, digest ids, times."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventbus.errors import InvalidArgumentError
from eventbus.model import Event, parse_rfc3339
from eventbus.plugin import Refused

__all__ = [
    "ID_PREFIX",
    "BodyProblem",
    "Draft",
    "body_digest",
    "digest_id",
    "optional_object",
    "optional_text",
    "time_of",
]

ID_PREFIX = "rdstation-"  # every event id this connector makes: `rdstation-<sha256 hex>`


class BodyProblem(Exception):
    """A body RD Station would not send: becomes a 400 whose `field` is the path at fault (`body.leads[1]`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason

    def refusal(self) -> Refused:
        return Refused.bad_request(self.reason, field=self.field)


@dataclass(frozen=True, slots=True)
class Draft:
    """One event to be, before the source is known: the connector turns it into an `Event`."""

    type: str
    id: str
    subject: str
    time: datetime
    data: object  # a JSON value (a normalised lead) or the raw body bytes

    def event(self, source: str) -> Event:
        """The validated event; raises `InvalidArgumentError` (`PayloadTooLargeError` over 1 MiB)."""
        return Event.create(
            type=self.type,
            source=source,
            id=self.id,
            subject=self.subject,
            time=self.time,
            data=self.data,
            datacontenttype="application/json",
        )


def digest_id(*parts: str) -> str:
    """`rdstation-` + the SHA-256 (hex) of the parts joined with newlines: the same facts, the same id."""
    joined = "\n".join(parts).encode("utf-8", "surrogatepass")  # lone surrogates from JSON escapes never raise
    return ID_PREFIX + hashlib.sha256(joined).hexdigest()


def body_digest(body: bytes) -> str:
    """The SHA-256 (hex) of the raw body: the id of last resort, when the body names nothing stable."""
    return hashlib.sha256(body).hexdigest()


def time_of(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset (`2018-03-13T14:07:04.254-03:00`); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value.strip())
    except InvalidArgumentError:
        return None


def optional_text(holder: dict[str, Any], key: str, field: str) -> str | None:
    """`holder[key]` when it is a non-empty string; None when absent, null or empty; a `BodyProblem` otherwise."""
    value = holder.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BodyProblem(field, f"{field} must be a string")
    return value


def optional_object(holder: dict[str, Any], key: str, field: str, what: str) -> dict[str, Any] | None:
    """`holder[key]` when it is a JSON object; None when absent or null; a `BodyProblem` otherwise."""
    value = holder.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BodyProblem(field, f"{field} must be a JSON object ({what})")
    return value
