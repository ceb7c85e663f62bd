"""`POST /events`: the CloudEvents HTTP binding (binary, structured and batched modes) into `Bus.publish`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web

from eventbus import tracing
from eventbus.auth import ApiKey, Scope
from eventbus.bus.service import MAX_BATCH, Bus
from eventbus.cejson import event_from_json
from eventbus.errors import FieldViolation, InvalidArgumentError, PayloadTooLargeError
from eventbus.http.problems import problem_response
from eventbus.logs import bind_event_ids
from eventbus.model import (
    DataKind,
    Event,
    ExtensionValue,
    PublishResult,
    is_json_media_type,
    parse_rfc3339,
    validate_event,
)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MODES = (
    "binary (the attributes as percent-encoded `ce-*` headers, the data as the body, its media type as Content-Type),"
    f" structured (Content-Type: {STRUCTURED}, one CloudEvents JSON object) or"
    f" batched (Content-Type: {BATCH}, a JSON array of 1 to {MAX_BATCH} of them)"
)
_HEADER_ATTRIBUTES = frozenset({"id", "source", "type", "specversion", "subject", "time", "dataschema"})
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR = re.compile(r"\\(.)")


class Authorizer(Protocol):
    def authorize(self, authorization: str | None, scope: Scope) -> ApiKey | None: ...


AuthorizerT = TypeVar("AuthorizerT", bound=Authorizer)


class UnsupportedMediaType(Exception):
    """The request is in none of the three modes: answered 415 with the modes that are accepted."""


def add_routes(app: web.Application, bus_key: web.AppKey[Bus], keys_key: web.AppKey[AuthorizerT]) -> None:
    """Register `POST /events` on `app`, reading the bus and the key ring from the given app keys."""

    async def post_events(request: web.Request) -> web.Response:
        """Publish the CloudEvents of the request atomically: 202 after the durable commit, 200 if all were dups."""
        request.app[keys_key].authorize(request.headers.get("Authorization"), Scope.PUBLISH)
        try:
            events = await read_events(request)
        except UnsupportedMediaType as exc:
            violation = FieldViolation("content-type", str(exc))
            return problem_response(415, "Unsupported media type", f"{exc}", violations=[violation])
        results = await tracing.publish(events, request.app[bus_key].publish)
        bind_event_ids(r.event_id for r in results)
        return publish_response(results)

    app.router.add_post("/events", post_events)


def publish_response(results: list[PublishResult]) -> web.Response:
    """`{"events": [...]}`: 202, or 200 when every event was a duplicate (a redelivery)."""
    body = {
        "events": [
            {"event_id": r.event_id, "id": r.id, "source": r.source, "seq": r.seq, "duplicate": r.duplicate}
            for r in results
        ]
    }
    return web.json_response(body, status=200 if all(r.duplicate for r in results) else 202)


async def read_events(request: web.Request) -> list[Event]:
    """The request's events, validated; the mode is chosen by Content-Type as the HTTP binding says (§3.1)."""
    raw_type = request.headers.get("Content-Type")
    essence = request.content_type.lower() if raw_type else ""
    if essence.startswith("application/cloudevents"):
        if essence not in (STRUCTURED, BATCH):
            raise UnsupportedMediaType(f"{essence} is not a format this server reads; send {MODES}")
        if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"charset {request.charset} is not accepted: CloudEvents JSON is UTF-8")
        document = parse_json_body(await read_body(request))
        if essence == BATCH:
            return batch_events(document)
        if not isinstance(document, Mapping):
            raise InvalidArgumentError.for_field("body", "a structured CloudEvent is one JSON object")
        return [event_from_json(document)]
    if not any(name.lower().startswith("ce-") for name in request.headers):
        got = f"Content-Type {raw_type}" if raw_type else "no Content-Type"
        raise UnsupportedMediaType(f"{got} and no ce-* headers: this is not a CloudEvent; send {MODES}")
    return [binary_event(request.headers, raw_type, await read_body(request))]


async def read_body(request: web.Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit`: declared, chunked or streamed."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLargeError.for_field("body", f"Content-Length is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError.for_field("body", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(body: bytes) -> object:
    """The body as a JSON value: it must be UTF-8 (a leading BOM is tolerated) and well-formed."""
    if not body.strip():
        raise InvalidArgumentError.for_field("body", "is empty; a JSON document is expected")
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError.for_field("body", f"not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError.for_field("body", f"not valid JSON: {exc}") from exc


def batch_events(document: object) -> list[Event]:
    """A batch: every event is checked and every problem reported, each under `events[i]`."""
    if not isinstance(document, list):
        raise InvalidArgumentError.for_field("body", "a batch is a JSON array of CloudEvents JSON objects")
    if not 1 <= len(document) <= MAX_BATCH:
        raise InvalidArgumentError.for_field("events", f"{len(document)} events; a batch holds 1 to {MAX_BATCH}")
    events: list[Event] = []
    problems: list[FieldViolation] = []
    only_size = True
    for index, item in enumerate(document):
        try:
            events.append(event_from_json(item, field_prefix=f"events[{index}]"))
        except InvalidArgumentError as exc:
            problems.extend(exc.violations)
            only_size = only_size and isinstance(exc, PayloadTooLargeError)
    if problems:
        raise (PayloadTooLargeError if only_size else InvalidArgumentError).from_violations(problems)
    return events


def decode_header_value(value: str) -> str:
    """HTTP binding §3.1.3.2: unquote an RFC 7230 quoted string, then one strict round of percent-decoding."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    bad = _BAD_PERCENT.search(value)
    if bad:
        escape = value[bad.start() : bad.start() + 3]
        raise ValueError(f"bad percent-encoding at {escape!r}: each % starts a %XX escape (two hex digits)")
    try:
        return unquote_to_bytes(value.encode("utf-8", "surrogateescape")).decode("utf-8")
    except UnicodeError as exc:
        raise ValueError("not UTF-8 once percent-decoded") from exc


def binary_event(headers: Mapping[str, str], content_type: str | None, body: bytes) -> Event:
    """Binary mode: attributes and extensions from `ce-*` headers, the body byte-exact as the data."""
    problems: list[FieldViolation] = []
    attributes: dict[str, str] = {}
    extensions: dict[str, ExtensionValue] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        header = name.lower()
        if not header.startswith("ce-"):
            continue
        attribute = header[3:]
        if attribute in seen:
            problems.append(FieldViolation(header, "sent more than once; each attribute is one header"))
            continue
        seen.add(attribute)
        if attribute == "datacontenttype":
            problems.append(FieldViolation(header, "not sent in binary mode: the data's media type is Content-Type"))
            continue
        try:
            text = decode_header_value(value)
        except ValueError as exc:
            problems.append(FieldViolation(header, str(exc)))
            continue
        if attribute in _HEADER_ATTRIBUTES:
            attributes[attribute] = text
        else:
            extensions[attribute] = text
    if "specversion" not in seen:
        problems.append(FieldViolation("ce-specversion", 'is required ("1.0")'))
    time = None
    if "time" in attributes:
        try:
            time = parse_rfc3339(attributes["time"], "ce-time")
        except InvalidArgumentError as exc:
            problems.extend(exc.violations)
    data: bytes | None = None
    kind: DataKind | None = None
    if body:  # an empty body is an event without data
        data, kind = body, DataKind.JSON if is_json_media_type(content_type) else DataKind.BINARY
    if kind is DataKind.JSON and not _is_utf8(body):
        problems.append(FieldViolation("data", "JSON data must be UTF-8"))
    event = Event(
        id=attributes.get("id", ""),
        source=attributes.get("source", ""),
        type=attributes.get("type", ""),
        specversion=attributes.get("specversion", ""),
        subject=attributes.get("subject"),
        time=time,
        datacontenttype=content_type,
        dataschema=attributes.get("dataschema"),
        extensions=extensions,
        data=data,
        data_kind=kind,
    )
    error_type: type[InvalidArgumentError] = InvalidArgumentError
    try:
        validate_event(event)
    except InvalidArgumentError as exc:
        error_type = InvalidArgumentError if problems else type(exc)
        named = {p.field for p in problems}
        renamed = (FieldViolation(_header_of(v.field), v.detail) for v in exc.violations)
        problems.extend(v for v in renamed if v.field not in named)
    if problems:
        raise error_type.from_violations(problems)
    return event


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header_of(field: str) -> str:
    """An attribute's violation named by the header that carried it (`type` → `ce-type`)."""
    if field == "datacontenttype":
        return "content-type"
    if field == "data":
        return field
    return "ce-" + field.removeprefix("extensions.")
