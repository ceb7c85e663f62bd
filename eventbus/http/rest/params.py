"""Reading REST inputs: query parameters and body fields, each refused with the field's name when it is wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from eventbus.errors import FieldViolation, InvalidArgumentError
from eventbus.http.rest.api import JSON, Call, Param
from eventbus.model import parse_rfc3339

PAGE_PARAMS = (
    Param("page_size", {"type": "integer", "minimum": 0, "maximum": 1000}, "at most this many (0 or none: 100)"),
    Param("page_token", {"type": "string"}, "the `next_page_token` of the previous page"),
)
MAX_TEXT = 4096
MAX_UNKNOWN_NAMED = 100
_INTEGER = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only (int() would take "１", "1_0" and " 1")


def page(call: Call) -> tuple[int, str]:
    size = query_int(call, "page_size", low=0, high=1000) or 0
    return size, call.query("page_token") or ""


def query_int(call: Call, name: str, *, low: int, high: int) -> int | None:
    text = call.query(name)
    if text is None:
        return None
    if not _INTEGER.fullmatch(text):
        raise InvalidArgumentError.for_field(name, f"{text[:40]!r} is not an integer")
    value = int(text)
    if not low <= value <= high:
        raise InvalidArgumentError.for_field(name, f"must be between {low} and {high}")
    return value


def query_time(call: Call, name: str) -> datetime | None:
    text = call.query(name)
    return parse_rfc3339(text, name) if text is not None else None


def query_bool(call: Call, name: str) -> bool:
    text = call.query(name)
    if text is None:
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no", ""):
        return False
    raise InvalidArgumentError.for_field(name, "true or false")


def refuse_unknown(body: JSON, known: Sequence[str]) -> None:
    """Every unknown field named at once (a violation each), so a caller fixes them in one round; at most
    `MAX_UNKNOWN_NAMED` of them, so a body of many tiny keys cannot make an answer many times its own size."""
    unknown = sorted(set(body) - set(known))
    if not unknown:
        return
    detail = f"unknown field; known: {', '.join(known)}"
    named = [FieldViolation(name, detail) for name in unknown[:MAX_UNKNOWN_NAMED]]
    if len(unknown) > MAX_UNKNOWN_NAMED:
        raise InvalidArgumentError(
            f"{len(unknown)} unknown fields (the first {MAX_UNKNOWN_NAMED} named)", violations=named
        )
    raise InvalidArgumentError.from_violations(named)


def text(body: JSON, name: str, *, required: bool = False, allow_empty: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidArgumentError.for_field(name, "is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or (not allow_empty and not value):
        raise InvalidArgumentError.for_field(name, f"must be a{' non-empty' if not allow_empty else ''} string")
    return value


def texts(body: JSON, name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 1000:
        raise InvalidArgumentError.for_field(name, "must be an array of strings")
    return list(value)


def number(body: JSON, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError.for_field(name, "must be a number")
    return float(value)


def integer(body: JSON, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # Signed 64 bits: what the stores keep (a larger one would fail in the driver, a 500, not the caller's 400).
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise InvalidArgumentError.for_field(name, "must be an integer (signed 64-bit)")
    return value


def flag(body: JSON, name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidArgumentError.for_field(name, "must be true or false")
    return value


def mapping(body: JSON, name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgumentError.for_field(name, "must be an object")
    return value


def duration(body: JSON, name: str) -> timedelta | None:
    value = number(body, name)
    if value is None:
        return None
    if not 0 <= value <= 10 * 365 * 86400:
        raise InvalidArgumentError.for_field(name, "seconds, between 0 and ten years")
    return timedelta(seconds=value)


def durations(body: JSON, name: str) -> list[timedelta] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise InvalidArgumentError.for_field(name, "must be an array of seconds")
    found = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 <= item <= 10 * 365 * 86400:
            raise InvalidArgumentError.for_field(f"{name}[{index}]", "seconds, between 0 and ten years")
        found.append(timedelta(seconds=item))
    return found


def moment(body: JSON, name: str, *, required: bool = False) -> datetime | None:
    value = text(body, name, required=required)
    return parse_rfc3339(value, name) if value is not None else None


# JSON Schema fragments of the same inputs, for the OpenAPI document.
SECONDS: JSON = {"type": "number", "minimum": 0, "maximum": 10 * 365 * 86400}
STRINGS: JSON = {"type": "array", "items": {"type": "string"}, "maxItems": 1000}


def body_schema(properties: JSON, *, required: Sequence[str] = ()) -> JSON:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def renamed(error: InvalidArgumentError, old: str, new: str) -> InvalidArgumentError:
    """The same error with fields `old`, `old[i]` and `old.x` named `new` (the REST name of a service field)."""
    violations = [
        FieldViolation(new, v.detail) if v.field == old or v.field.startswith((f"{old}[", f"{old}.")) else v
        for v in error.violations
    ]
    return type(error).from_violations(violations) if violations else error
