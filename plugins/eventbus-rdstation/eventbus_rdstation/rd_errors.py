"""RD Station's error bodies, in every shape the API uses, read into one list and one bounded sentence."""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from eventbus.plugin.destinations import HttpResponse

__all__ = [
    "MAX_REASON",
    "RDError",
    "describe",
    "error_types",
    "header",
    "parse_errors",
    "rate_limit_delay",
    "retry_after",
]

MAX_REASON = 500
DEFAULT_RATE_LIMIT_DELAY = 60.0
MAX_DELAY = 86_400.0
_MAX_ITEMS = 20
_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class RDError:
    """One error RD reported: its `error_type` (`INVALID_OPTION`, `CANNOT_BE_NULL`...), message and field path."""

    error_type: str | None = None
    message: str | None = None
    path: str | None = None
    valid_options: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = " ".join(part for part in (self.error_type, f"at {self.path}" if self.path else None) if part)
        text = self.message or ""
        if self.valid_options:
            text = f"{text} (valid options: {', '.join(self.valid_options)})".strip()
        return f"{head}: {text}" if head and text else head or text


def parse_errors(body: bytes) -> list[RDError]:
    """The errors in an RD error body; empty when the body is not JSON or holds none of the known shapes.

    Shapes (the Ruby client's `error/format.rb` handles the same five): a flat `{"error_type", "error_message"}`;
    `{"errors": {...}}` holding one such hash; `{"errors": {"<field>": [{...}, ...]}}` (hash of arrays, the key
    being the field); `{"errors": [{..., "path": ...}]}` (array of hashes); `{"error": "..."}` / `{"message": ...}`.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(document, dict):
        return []
    return _from_document(document)[:_MAX_ITEMS]


def error_types(body: bytes) -> set[str]:
    """The `error_type`s in an error body (e.g. `{"INVALID_REFRESH_TOKEN"}`)."""
    return {error.error_type for error in parse_errors(body) if error.error_type}


def describe(status: int, body: bytes, *, limit: int = MAX_REASON) -> str:
    """What RD said, for a delivery's reason: `HTTP 400: INVALID_OPTION at $.body.event_type: Must be ...`."""
    errors = parse_errors(body)
    if errors:
        text = f"HTTP {status}: " + "; ".join(str(error) for error in errors)
    elif not body.strip():
        text = f"HTTP {status} with an empty body"
    else:
        text = f"HTTP {status} with an unreadable body ({len(body)} bytes, not an RD error document)"
    return _bounded(" ".join(text.split()), limit)


def header(response: HttpResponse, name: str) -> str | None:
    """The first value of header `name` (any case) in `response`."""
    wanted = name.lower()
    return next((value for key, value in response.headers if key.lower() == wanted), None)


def retry_after(response: HttpResponse, now: datetime) -> float | None:
    """`Retry-After` (seconds or an HTTP date, RFC 9110 §10.2.3) in seconds; None when absent or unreadable."""
    text = (header(response, "Retry-After") or "").strip()
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_DELAY)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return min(seconds, MAX_DELAY) if seconds >= 0 else None


def rate_limit_delay(response: HttpResponse, now: datetime) -> float:
    """How long a 429 asks to wait: `Retry-After`, else the body's `remaining_time_ms` (UNCONFIRMED shape,
    specs.md §3.3), else a minute."""
    delay = retry_after(response, now)
    if delay is not None:
        return delay
    try:
        document = json.loads(response.body)
    except (ValueError, RecursionError):
        document = None
    remaining = document.get("remaining_time_ms") if isinstance(document, dict) else None
    if isinstance(remaining, int | float) and not isinstance(remaining, bool) and 0 <= remaining < MAX_DELAY * 1000:
        return float(math.ceil(remaining / 1000))
    return DEFAULT_RATE_LIMIT_DELAY


def _from_document(document: Mapping[str, object]) -> list[RDError]:
    errors = document.get("errors")
    if isinstance(errors, list):
        return [error for item in errors if (error := _from_hash(item)) is not None]
    if isinstance(errors, dict):
        single = _from_hash(errors)
        if single is not None and ("error_type" in errors or "error_message" in errors):
            return [single]
        return list(_from_fields(errors))
    if isinstance(errors, str):
        return [RDError(message=_text(errors))]
    flat = _from_hash(document)
    if flat is not None and ("error_type" in document or "error_message" in document):
        return [flat]
    return _from_plain(document)


def _from_fields(errors: Mapping[str, object]) -> Iterable[RDError]:
    """The hash-of-arrays shape: `{"email": [{"error_type": ..., "error_message": ...}], "name": "is blank"}`."""
    for field, value in errors.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                yield RDError(message=_text(item), path=_text(field))
            elif (error := _from_hash(item)) is not None:
                yield RDError(error.error_type, error.message, error.path or _text(field), error.valid_options)


def _from_hash(value: object) -> RDError | None:
    if not isinstance(value, dict):
        return None
    error_type = value.get("error_type")
    message = value.get("error_message", value.get("message"))
    path = value.get("path")
    rules = value.get("validation_rules")
    options = rules.get("valid_options") if isinstance(rules, dict) else None
    error = RDError(
        error_type=_text(error_type) if isinstance(error_type, str) else None,
        message=_text(message) if isinstance(message, str) else None,
        path=_text(path) if isinstance(path, str) else None,
        valid_options=tuple(_text(str(o)) for o in options[:_MAX_ITEMS]) if isinstance(options, list) else (),
    )
    return error if error.error_type or error.message else None


def _from_plain(document: Mapping[str, object]) -> list[RDError]:
    """`{"error": "..."}` (also OAuth's `{"error", "error_description"}`) and `{"message": "..."}`."""
    error, description, message = document.get("error"), document.get("error_description"), document.get("message")
    parts = [_text(part) for part in (error, description, message) if isinstance(part, str) and part.strip()]
    if isinstance(error, dict) and (nested := _from_hash(error)) is not None:
        return [nested]
    return [RDError(message=": ".join(parts))] if parts else []


def _text(value: str) -> str:
    return _bounded(" ".join(value.split()), _MAX_TEXT)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
