"""The client's Admin calls for event types (the catalogue and JSON Schemas per type) and test sends, and what they
return: `EventTypeStatus`.

`EventBusClient` inherits `TypeCalls`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eventbus.client_values import DeliveryStatus, _time, delivery_from_proto
from eventbus.errors import InvalidArgumentError
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import admin_pb2_grpc


@dataclass(frozen=True, slots=True)
class EventTypeStatus:
    """One event type as `types show` prints it: how often and when it was seen, a sample, its schema."""

    type: str
    count: int  # events stored (duplicates not counted); 0: a schema registered ahead of any event
    first_seen: datetime | None
    last_seen: datetime | None
    sample_event_id: str | None  # the last event seen
    sample_json: str | None  # its data as JSON text (at most 4 KiB); None: no data, or see sample_omitted
    sample_omitted: str | None  # too_large | not_json
    schema_json: str | None  # the registered JSON Schema as JSON text
    schema_updated_at: datetime | None

    @property
    def sample(self) -> Any:
        """The sample as a JSON value (None when there is none)."""
        return json.loads(self.sample_json) if self.sample_json is not None else None

    @property
    def schema(self) -> Any:
        """The registered schema as a JSON value (None when there is none)."""
        return json.loads(self.schema_json) if self.schema_json is not None else None


def event_type_from_proto(message: pb.EventType) -> EventTypeStatus:
    return EventTypeStatus(
        type=message.type,
        count=message.count,
        first_seen=_time(message, "first_seen"),
        last_seen=_time(message, "last_seen"),
        sample_event_id=message.sample_event_id or None,
        sample_json=message.sample or None,
        sample_omitted=message.sample_omitted or None,
        schema_json=message.schema or None,
        schema_updated_at=_time(message, "schema_updated_at"),
    )


def _json_text(value: object, field: str) -> str:
    """JSON text as given, or a value encoded as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError.for_field(field, f"not JSON-serialisable: {exc}") from exc


class _Connected(Protocol):
    @property
    def admin(self) -> admin_pb2_grpc.AdminStub: ...

    async def _call(self, method: Any, request: Any) -> Any: ...


class TypeCalls:
    """Event types and their JSON Schemas, and test sends to a subscription (mixed into `EventBusClient`)."""

    async def list_event_types(
        self: _Connected, *, pattern: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[EventTypeStatus], str]:
        """One page in type-name order, and the next page's token ("" on the last). A filtered page may be short."""
        request = pb.ListEventTypesRequest(page_size=page_size, page_token=page_token, pattern=pattern or "")
        response = await self._call(self.admin.ListEventTypes, request)
        return [event_type_from_proto(t) for t in response.event_types], response.next_page_token

    async def get_event_type(self: _Connected, type: str) -> EventTypeStatus:
        return event_type_from_proto(await self._call(self.admin.GetEventType, pb.GetEventTypeRequest(type=type)))

    async def set_event_schema(
        self: _Connected, type: str, schema: str | Mapping[str, object] | bool
    ) -> EventTypeStatus:
        """Register (or replace) the type's JSON Schema (draft 2020-12): JSON text, an object or a boolean."""
        request = pb.SetEventSchemaRequest(type=type, schema=_json_text(schema, "schema"))
        return event_type_from_proto(await self._call(self.admin.SetEventSchema, request))

    async def delete_event_schema(self: _Connected, type: str) -> None:
        await self._call(self.admin.DeleteEventSchema, pb.DeleteEventSchemaRequest(type=type))

    async def send_test_event(
        self: _Connected, subscription_id: str, *, type: str | None = None, data: object = None
    ) -> DeliveryStatus:
        """One test event to this subscription only, sent at once (type `eventbus.test` and a small sample unless
        given); the delivery it made (see `get_delivery` for its attempts)."""
        request = pb.SendTestEventRequest(subscription_id=subscription_id, type=type or "")
        if data is not None:
            request.data = _json_text(data, "data")
        return delivery_from_proto(await self._call(self.admin.SendTestEvent, request))
