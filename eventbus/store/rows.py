"""Event rows: how an `Event` is laid out in columns, shared by every SQL backend."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.model import DataKind, Event, ExtensionValue, StoredEvent, format_rfc3339, parse_rfc3339

# Column order of every SELECT that reads events: keep `event_from_row` in step.
EVENT_COLUMNS = (
    "seq, event_id, source, id, type, subject, time, datacontenttype, dataschema, extensions, data, data_kind, "
    "received_at"
)


def extensions_to_text(extensions: Mapping[str, ExtensionValue]) -> str | None:
    """Extensions as JSON with a type tag each, so booleans, integers, bytes and timestamps come back as they were."""
    if not extensions:
        return None
    tagged: dict[str, list[Any]] = {}
    for name, value in extensions.items():
        if isinstance(value, bool):
            tagged[name] = ["b", value]
        elif isinstance(value, int):
            tagged[name] = ["i", value]
        elif isinstance(value, bytes):
            tagged[name] = ["y", base64.b64encode(value).decode()]
        elif isinstance(value, datetime):
            tagged[name] = ["t", format_rfc3339(value)]
        else:
            tagged[name] = ["s", value]
    return json.dumps(tagged, separators=(",", ":"))


def extensions_from_text(text: str | None) -> dict[str, ExtensionValue]:
    if not text:
        return {}
    out: dict[str, ExtensionValue] = {}
    for name, (tag, value) in json.loads(text).items():
        if tag == "y":
            out[name] = base64.b64decode(value)
        elif tag == "t":
            out[name] = parse_rfc3339(value)
        else:
            out[name] = value
    return out


def event_params(event: Event) -> tuple[object, ...]:
    """source … data_kind, in the column order of `EVENT_COLUMNS` after `event_id`."""
    return (
        event.source,
        event.id,
        event.type,
        event.subject,
        format_rfc3339(event.time) if event.time is not None else None,
        event.datacontenttype,
        event.dataschema,
        extensions_to_text(event.extensions),
        event.data,
        event.data_kind.value if event.data_kind is not None else None,
    )


def event_from_row(row: Any, offset: int = 0) -> StoredEvent:
    """Rebuild a stored event from columns in `EVENT_COLUMNS` order, starting at `offset`."""
    (seq, event_id, source, id_, type_, subject, time, contenttype, dataschema, extensions, data, kind, received) = row[
        offset : offset + 13
    ]
    event = Event(
        id=id_,
        source=source,
        type=type_,
        subject=subject,
        time=parse_rfc3339(time) if time is not None else None,
        datacontenttype=contenttype,
        dataschema=dataschema,
        extensions=extensions_from_text(extensions),
        data=bytes(data) if data is not None else None,
        data_kind=DataKind(kind) if kind is not None else None,
    )
    return StoredEvent(event=event, event_id=event_id, seq=seq, received_at=from_micros(received))


def schedule_to_text(schedule: tuple[timedelta, ...]) -> str:
    return json.dumps([d.total_seconds() for d in schedule])


def schedule_from_text(text: str) -> tuple[timedelta, ...]:
    return tuple(timedelta(seconds=s) for s in json.loads(text))


def micros(moment: datetime | None) -> int | None:
    return to_micros(moment) if moment is not None else None
