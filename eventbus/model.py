"""Domain values: CloudEvents 1.0 events as the bus keeps them, with the CloudEvents rules enforced."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from eventbus.errors import FieldViolation, InvalidArgumentError, PayloadTooLargeError
from eventbus.patterns import TYPE_SEGMENT

MAX_EVENT_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 128  # nesting of arrays and objects in JSON data: deeper breaks every recursive reader
SPEC_VERSION = "1.0"
CORE_ATTRIBUTES = frozenset(
    {"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema", "data"}
)
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,64}$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone ones, from JSON escapes like \ud800
_URI_CHARACTERS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+(\s*;.*)?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_INT32 = (-(2**31), 2**31 - 1)

ExtensionValue = bool | int | str | bytes | datetime


class DataKind(StrEnum):
    """How the data arrived, which decides how it is written back out (CloudEvents JSON `data` or `data_base64`)."""

    JSON = "json"  # a JSON value (structured mode, or a Python object given to `Event.create`)
    TEXT = "text"  # a string (protobuf `text_data`)
    BINARY = "binary"  # bytes, kept byte-exact (protobuf `binary_data`, HTTP binary mode, a provider's raw body)


@dataclass(frozen=True, slots=True, eq=True)
class Event:
    """A CloudEvents 1.0 event. `data` is always bytes; `data_kind` says what they were when they arrived."""

    id: str
    source: str
    type: str
    specversion: str = SPEC_VERSION
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: Mapping[str, ExtensionValue] = field(default_factory=dict)
    data: bytes | None = None
    data_kind: DataKind | None = None

    @classmethod
    def create(
        cls,
        *,
        type: str,
        source: str,
        data: object = None,
        id: str | None = None,
        subject: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> Event:
        """Build an event the friendly way: `bytes` data stays binary, `str` is text, anything else is JSON.

        A missing `id` becomes a random UUID. The result is validated.
        """
        payload, kind = None, None
        if isinstance(data, bytes | bytearray | memoryview):
            payload, kind = bytes(data), DataKind.BINARY
        elif isinstance(data, str):
            payload, kind = data.encode(), DataKind.TEXT
        elif data is not None:
            payload, kind = dumps_json(data), DataKind.JSON
            datacontenttype = datacontenttype or "application/json"
        event = cls(
            id=id or str(uuid.uuid4()),
            source=source,
            type=type,
            subject=subject,
            time=time,
            datacontenttype=datacontenttype,
            dataschema=dataschema,
            extensions=dict(extensions or {}),
            data=payload,
            data_kind=kind,
        )
        validate_event(event)
        return event

    @property
    def has_json_data(self) -> bool:
        """True when the data is a JSON document (by how it arrived or by its content type)."""
        if self.data is None:
            return False
        return self.data_kind is DataKind.JSON or is_json_media_type(self.datacontenttype)

    def json_data(self) -> Any:
        """The data parsed as JSON; raises `ValueError` when it is not JSON."""
        if self.data is None:
            raise ValueError("the event has no data")
        return json.loads(self.data)

    def size(self) -> int:
        """Bytes counted against the 1 MiB limit: the data plus every attribute's name and value."""
        total = len(self.data or b"") + len(self.id) + len(self.source) + len(self.type) + 40
        for text in (self.subject, self.datacontenttype, self.dataschema):
            total += len(text or "")
        for name, value in self.extensions.items():
            total += len(name) + (len(value) if isinstance(value, str | bytes) else 16)
        return total


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with the bus's metadata: its `evt_` id, its position `seq` and when it was received."""

    event: Event
    event_id: str
    seq: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What publishing one event answered: the ids, and whether (source, id) had been published already."""

    id: str
    source: str
    event_id: str
    seq: int
    duplicate: bool


def dumps_json(value: object) -> bytes:
    """Compact JSON bytes for a JSON-compatible value."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError.for_field("data", f"not JSON-serialisable: {exc}") from exc


def is_json_media_type(media_type: str | None) -> bool:
    """`application/json`, `text/json` and any `+json` type, parameters ignored."""
    if not media_type:
        return False
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence in ("application/json", "text/json") or essence.endswith("+json")


def parse_rfc3339(text: str, field: str = "time") -> datetime:
    """Parse an RFC 3339 timestamp (offset required); errors name `field`."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise InvalidArgumentError.for_field(field, f"{text!r} is not an RFC 3339 timestamp (2026-05-01T12:00:00Z)")
    head, _, rest = text.partition(".")
    if rest:  # Python keeps microseconds: cut the fraction to 6 digits before parsing.
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError as exc:
        raise InvalidArgumentError.for_field(field, f"{text!r} is not a valid date and time: {exc}") from exc


def format_rfc3339(moment: datetime) -> str:
    """RFC 3339 text; UTC is written with `Z`."""
    if moment.utcoffset() == UTC.utcoffset(None):
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.isoformat(timespec="microseconds")


def validate_event(event: Event) -> None:
    """Enforce CloudEvents 1.0 and the bus's own rules; every violation is reported, each naming its field."""
    problems: list[FieldViolation] = []

    def check_string(name: str, value: object, *, required: bool) -> bool:
        if value is None or value == "":
            if required or value == "":
                problems.append(FieldViolation(name, "is required" if required else "must not be empty when set"))
            return False
        if not isinstance(value, str):
            problems.append(FieldViolation(name, "must be a string"))
            return False
        if _CONTROL.search(value):
            problems.append(FieldViolation(name, "contains control characters"))
            return False
        if _SURROGATE.search(value):
            problems.append(FieldViolation(name, "contains a lone surrogate (not a Unicode character)"))
            return False
        return True

    check_string("id", event.id, required=True)
    if check_string("source", event.source, required=True) and not is_uri_reference(event.source):
        problems.append(FieldViolation("source", f"{event.source!r} is not a URI-reference (RFC 3986)"))
    if event.specversion != SPEC_VERSION:
        problems.append(FieldViolation("specversion", f"must be {SPEC_VERSION!r}, got {event.specversion!r}"))
    if check_string("type", event.type, required=True) and not is_valid_type(event.type):
        problems.append(FieldViolation("type", f"{event.type!r}: segments separated by '.', each of [A-Za-z0-9_-]+"))
    check_string("subject", event.subject, required=False)
    if event.time is not None and (not isinstance(event.time, datetime) or event.time.tzinfo is None):
        problems.append(FieldViolation("time", "must be a timezone-aware timestamp"))
    if check_string("datacontenttype", event.datacontenttype, required=False) and not _MEDIA_TYPE.match(
        event.datacontenttype or ""
    ):
        problems.append(FieldViolation("datacontenttype", f"{event.datacontenttype!r} is not a media type"))
    if check_string("dataschema", event.dataschema, required=False) and not is_absolute_uri(event.dataschema or ""):
        problems.append(FieldViolation("dataschema", f"{event.dataschema!r} is not an absolute URI"))
    for name, value in event.extensions.items():
        problems.extend(_extension_problems(name, value))
    if event.data is not None and event.data_kind is DataKind.JSON:
        try:
            json.loads(event.data)
        except (ValueError, RecursionError) as exc:
            problems.append(FieldViolation("data", f"not valid JSON: {exc}"))
        else:
            if json_too_deep(event.data):
                problems.append(FieldViolation("data", f"JSON nested deeper than {MAX_JSON_DEPTH} levels"))
    if problems:
        raise InvalidArgumentError.from_violations(problems)
    size = event.size()
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLargeError(
            f"event is {size} bytes, over the limit of {MAX_EVENT_BYTES}",
            violations=[FieldViolation("data", f"event is {size} bytes; the limit is {MAX_EVENT_BYTES} (1 MiB)")],
        )


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(document: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether valid JSON text nests arrays and objects deeper than `limit`: what recursive code (views, schema
    validation, the CLI) can no longer walk. Costs two byte counts unless the text holds more than `limit`
    containers in all."""
    data = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    structure = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in structure:
        depth += 1 if byte in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False


def _extension_problems(name: object, value: object) -> list[FieldViolation]:
    where = f"extensions.{name}"
    if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name):
        return [FieldViolation(where, "attribute names are 1-64 characters of [a-z0-9] (CloudEvents 1.0)")]
    if name in CORE_ATTRIBUTES:
        return [FieldViolation(where, f"{name!r} is a reserved attribute name")]
    if isinstance(value, bool | bytes | datetime):
        return []
    if isinstance(value, int):
        return [] if _INT32[0] <= value <= _INT32[1] else [FieldViolation(where, "integers are signed 32-bit")]
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return [FieldViolation(where, "contains a lone surrogate (not a Unicode character)")]
        return [FieldViolation(where, "contains control characters")] if _CONTROL.search(value) else []
    return [FieldViolation(where, "must be a boolean, integer, string, bytes or timestamp")]


@functools.lru_cache(maxsize=4096)
def is_valid_type(type_: str) -> bool:
    """Segments of [A-Za-z0-9_-]+ separated by `.` (cached: a bus sees few distinct types, many times)."""
    return all(TYPE_SEGMENT.fullmatch(s) for s in type_.split("."))


@functools.lru_cache(maxsize=4096)
def is_uri_reference(text: str) -> bool:
    """RFC 3986 URI-reference: allowed characters, valid percent-escapes, and a valid scheme when one is given."""
    if not _URI_CHARACTERS.match(text) or ("%" in text and _BAD_PERCENT.search(text)):
        return False
    head = re.split(r"[/?#]", text, maxsplit=1)[0]
    if ":" in head:
        return bool(_SCHEME.match(head.split(":", 1)[0]))
    return True


def is_absolute_uri(text: str) -> bool:
    """An RFC 3986 URI with a scheme."""
    if not is_uri_reference(text):
        return False
    head = re.split(r"[/?#]", text, maxsplit=1)[0]
    return ":" in head


def filter_document(event: Event) -> dict[str, object]:
    """The document content filters are evaluated against (DESIGN.md §2): attributes, `ext`, and JSON `data`."""
    document: dict[str, object] = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "specversion": event.specversion,
        "ext": {k: (format_rfc3339(v) if isinstance(v, datetime) else v) for k, v in event.extensions.items()},
    }
    for name in ("subject", "datacontenttype", "dataschema"):
        value = getattr(event, name)
        if value is not None:
            document[name] = value
    if event.time is not None:
        document["time"] = format_rfc3339(event.time)
    if event.has_json_data:
        try:
            document["data"] = event.json_data()
        except ValueError:
            pass  # bytes labelled JSON that do not parse: only the attributes can be filtered on
    return document
