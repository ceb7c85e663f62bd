"""CloudEvents JSON format (structured mode): events to and from JSON objects, with field-named errors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbus.errors import FieldViolation, InvalidArgumentError
from eventbus.model import (
    DataKind,
    Event,
    ExtensionValue,
    StoredEvent,
    dumps_json,
    format_rfc3339,
    is_json_media_type,
    parse_rfc3339,
    validate_event,
)

_STRING_ATTRIBUTES = ("id", "source", "type", "specversion", "subject", "datacontenttype", "dataschema")


def event_from_json(obj: object, *, field_prefix: str = "") -> Event:
    """Parse one CloudEvents JSON object into a validated `Event`; errors name `field_prefix.attribute`."""
    try:
        return _event_from_json(obj)
    except InvalidArgumentError as exc:
        raise (exc.prefixed(field_prefix) if field_prefix else exc) from None


def _event_from_json(obj: object) -> Event:
    if not isinstance(obj, Mapping):
        raise InvalidArgumentError(
            "a CloudEvent must be a JSON object", violations=[FieldViolation("", "not an object")]
        )
    problems: list[FieldViolation] = []
    strings: dict[str, str | None] = {}
    for name in _STRING_ATTRIBUTES:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(FieldViolation(name, "must be a string"))
            value = None
        strings[name] = value
    if strings["specversion"] is None and "specversion" not in obj:
        problems.append(FieldViolation("specversion", 'is required ("1.0")'))
    time = None
    if obj.get("time") is not None:
        try:
            time = parse_rfc3339(obj["time"]) if isinstance(obj["time"], str) else None
            if time is None:
                problems.append(FieldViolation("time", "must be an RFC 3339 string"))
        except InvalidArgumentError as exc:
            problems.extend(exc.violations)
    extensions: dict[str, ExtensionValue] = {}
    for name, value in obj.items():
        if name in _STRING_ATTRIBUTES or name in ("time", "data", "data_base64"):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, bool | int | str):
            problems.append(FieldViolation(f"extensions.{name}", "extension values are strings, integers or booleans"))
            continue
        extensions[name] = value
    data, kind = None, None
    contenttype = strings["datacontenttype"]
    if "data" in obj and "data_base64" in obj:
        problems.append(FieldViolation("data", "`data` and `data_base64` are mutually exclusive"))
    elif "data_base64" in obj:
        raw = obj["data_base64"]
        try:
            data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            problems.append(FieldViolation("data_base64", "must be a base64 string"))
        kind = DataKind.BINARY
    elif "data" in obj and obj["data"] is not None:
        value = obj["data"]
        if isinstance(value, str) and contenttype is not None and not is_json_media_type(contenttype):
            data, kind = value.encode(), DataKind.TEXT
        else:
            data, kind = dumps_json(value), DataKind.JSON
            contenttype = contenttype or "application/json"
    if problems:
        raise InvalidArgumentError.from_violations(problems)
    event = Event(
        id=strings["id"] or "",
        source=strings["source"] or "",
        type=strings["type"] or "",
        specversion=strings["specversion"] or "",
        subject=strings["subject"],
        time=time,
        datacontenttype=contenttype,
        dataschema=strings["dataschema"],
        extensions=extensions,
        data=data,
        data_kind=kind,
    )
    validate_event(event)
    return event


def events_from_json_lines(text: str) -> list[Event]:
    """One CloudEvents JSON object per non-blank line; errors name `line N`."""
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidArgumentError.for_field(f"line {number}", f"not valid JSON: {exc}") from exc
        events.append(event_from_json(obj, field_prefix=f"line {number}"))
    return events


def event_to_json(event: Event) -> dict[str, Any]:
    """The CloudEvents JSON object: JSON data as a value, text as a string, other bytes as `data_base64`."""
    out: dict[str, Any] = {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type}
    for name in ("subject", "datacontenttype", "dataschema"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.time is not None:
        out["time"] = format_rfc3339(event.time)
    for name, value in event.extensions.items():
        if isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
        elif isinstance(value, datetime):
            out[name] = format_rfc3339(value)
        else:
            out[name] = value
    if event.data is not None:
        if event.has_json_data:
            try:
                out["data"] = json.loads(event.data)
                return out
            except ValueError:
                pass
        if event.data_kind is DataKind.TEXT:
            out["data"] = event.data.decode("utf-8", errors="replace")
        else:
            out["data_base64"] = base64.b64encode(event.data).decode()
    return out


def stored_event_to_json(stored: StoredEvent) -> dict[str, Any]:
    """CloudEvents JSON plus the bus's `event_id`, `seq` and `received_at`."""
    out = event_to_json(stored.event)
    out["event_id"] = stored.event_id
    out["seq"] = stored.seq
    out["received_at"] = format_rfc3339(stored.received_at)
    return out


def raw_request_to_json(
    *,
    request_id: str,
    received_at: datetime,
    method: str,
    path: str,
    query: tuple[tuple[str, str], ...],
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    remote: str | None,
) -> dict[str, Any]:
    """The `raw_request` of an event from `POST /hooks` as REST and the CLI show it: the body as text, or in
    `body_base64` when it is not UTF-8."""
    try:
        text, encoded = body.decode("utf-8"), None
    except UnicodeDecodeError:
        text, encoded = "", base64.b64encode(body).decode()
    return {
        "request_id": request_id,
        "received_at": format_rfc3339(received_at),
        "method": method,
        "path": path,
        "query": [[k, v] for k, v in query],
        "headers": [[k, v] for k, v in headers],
        "body": text,
        "body_base64": encoded,
        "remote": remote,
    }
