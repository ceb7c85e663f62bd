"""Event types: the catalogue of types seen (counts, first and last seen, a sample) and their JSON Schemas.

The one place these rules live: gRPC `Admin`, the CLI and the REST API all call it. The schemas themselves are
checked at publish by `Bus` (eventbus/bus/schemas.py).
"""

from __future__ import annotations

import base64
import binascii

import structlog

from eventbus.bus.schemas import compile_schema
from eventbus.bus.service import Bus
from eventbus.errors import InvalidArgumentError, NotFoundError
from eventbus.patterns import ONE_SEGMENT, TRAILING_SEGMENTS, PatternSet, is_system_type, validate_type
from eventbus.store.types import EventTypeRecord, EventTypeStore

log = structlog.get_logger("eventbus.types")
SCAN_PAGES = 10  # a filtered page reads at most this many pages' worth of types before answering


def _check_type(type_: str) -> str:
    if not type_:
        raise InvalidArgumentError.for_field("type", "the event type is required")
    validate_type(type_, "type")
    return type_


def _prefix(pattern: PatternSet) -> str:
    """The literal start every type the (single) pattern matches shares: `order.` for `order.*`."""
    segments = pattern.texts[0].split(".")
    literal: list[str] = []
    for segment in segments:
        if segment in (ONE_SEGMENT, TRAILING_SEGMENTS):
            return ".".join(literal) + "." if literal else ""
        literal.append(segment)
    return ".".join(literal)


def encode_type_token(type_: str) -> str:
    return base64.urlsafe_b64encode(f"type:{type_}".encode()).decode().rstrip("=")


def decode_type_token(token: str) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    kind, _, type_ = text.partition(":")
    if kind != "type" or not type_:
        raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
    return type_


class EventTypes:
    """The service layer for the event-type catalogue and the registered schemas."""

    def __init__(self, bus: Bus, store: EventTypeStore) -> None:
        self.bus = bus
        self.store = store

    async def list_page(
        self, *, page_size: int = 100, page_token: str = "", pattern: str | None = None
    ) -> tuple[list[EventTypeRecord], str]:
        """One page in type-name order and the next page's token ("" on the last page).

        Without a pattern every type is listed, system types included; a pattern matches as in subscriptions
        (`**` excludes system types, `eventbus.**` lists them). A filtered page reads a bounded number of types:
        it may come back short, with a token; keep paging until the token is empty.
        """
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        size = page_size or 100
        after = decode_type_token(page_token)
        patterns = PatternSet.parse([pattern], field="pattern") if pattern else None
        prefix = _prefix(patterns) if patterns else ""
        if patterns is None:
            found = await self.store.list_event_types(after=after, limit=size + 1)
            page = found[:size]
            return page, (encode_type_token(page[-1].type) if len(found) > size else "")
        page = []
        scanned = 0
        while scanned < size * SCAN_PAGES:
            chunk = await self.store.list_event_types(after=after, limit=size + 1, prefix=prefix)
            for record in chunk:
                scanned += 1
                if patterns.matches(record.type):
                    if len(page) == size:  # one more match exists: this page is full and not the last
                        return page, encode_type_token(page[-1].type)
                    page.append(record)
                after = record.type
            if len(chunk) <= size:
                return page, ""
        return page, encode_type_token(after)

    async def get(self, type: str) -> EventTypeRecord:
        found = await self.store.get_event_type(_check_type(type))
        if found is None:
            raise NotFoundError(f"no event of type {type!r} was seen and it has no schema")
        return found

    async def set_schema(self, type: str, schema: object) -> EventTypeRecord:
        """Register (or replace) the JSON Schema (draft 2020-12) that events of `type` must validate against.

        `schema` is JSON text, an object or a boolean; at most 64 KiB, self-contained (no remote `$ref`). From the
        next publish on in this process, and within a second in every other.
        """
        _check_type(type)
        if is_system_type(type):
            raise InvalidArgumentError.for_field("type", "system events (eventbus.*) are not validated")
        compiled = compile_schema(schema)
        record = await self.store.set_event_schema(type, compiled.text, now=self.bus.clock.now())
        self.bus.schemas.invalidate()
        log.info("event_schema_set", type=type, bytes=len(compiled.text))
        return record

    async def delete_schema(self, type: str) -> None:
        """Events of `type` are no longer validated (from the next publish on in this process)."""
        if not await self.store.delete_event_schema(_check_type(type), now=self.bus.clock.now()):
            raise NotFoundError(f"event type {type!r} has no schema")
        self.bus.schemas.invalidate()
        log.info("event_schema_deleted", type=type)
