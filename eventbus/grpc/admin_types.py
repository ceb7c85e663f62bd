"""`eventbus.v1.Admin`, event types and test sends: the catalogue, JSON Schemas per type, one test event to one
subscription. Decode, call the service layer, encode."""

from __future__ import annotations

import json

from eventbus.auth import KeyRing, Scope
from eventbus.bus.subscriptions import Subscriptions
from eventbus.bus.types import EventTypes
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert import to_timestamp
from eventbus.grpc.convert_admin import delivery_to_proto
from eventbus.store.types import EventTypeRecord
from eventbus.v1 import admin_pb2 as pb

_UNREACHABLE = "unreachable: rpc() aborts on error"


def event_type_to_proto(record: EventTypeRecord) -> pb.EventType:
    message = pb.EventType(
        type=record.type,
        count=record.count,
        sample_event_id=record.sample_event_id or "",
        sample=record.sample or "",
        sample_omitted=record.sample_omitted or "",
        schema=record.schema or "",
    )
    for field in ("first_seen", "last_seen", "schema_updated_at"):
        moment = getattr(record, field)
        if moment is not None:
            getattr(message, field).CopyFrom(to_timestamp(moment))
    return message


def _json_data(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError.for_field("data", f"not valid JSON: {exc}") from None


class TypesAdmin:
    """Mixed into `AdminServicer`, which sets the key ring and the services."""

    keys: KeyRing
    types: EventTypes
    subscriptions: Subscriptions

    async def ListEventTypes(self, request: pb.ListEventTypesRequest, context: Context) -> pb.ListEventTypesResponse:
        async with rpc(context, "ListEventTypes", self.keys, Scope.ADMIN):
            records, token = await self.types.list_page(
                page_size=request.page_size, page_token=request.page_token, pattern=request.pattern or None
            )
            return pb.ListEventTypesResponse(
                event_types=[event_type_to_proto(r) for r in records], next_page_token=token
            )
        raise AssertionError(_UNREACHABLE)

    async def GetEventType(self, request: pb.GetEventTypeRequest, context: Context) -> pb.EventType:
        async with rpc(context, "GetEventType", self.keys, Scope.ADMIN):
            return event_type_to_proto(await self.types.get(request.type))
        raise AssertionError(_UNREACHABLE)

    async def SetEventSchema(self, request: pb.SetEventSchemaRequest, context: Context) -> pb.EventType:
        async with rpc(context, "SetEventSchema", self.keys, Scope.ADMIN):
            if not request.schema:
                raise InvalidArgumentError.for_field("schema", "the JSON Schema (JSON text) is required")
            return event_type_to_proto(await self.types.set_schema(request.type, request.schema))
        raise AssertionError(_UNREACHABLE)

    async def DeleteEventSchema(
        self, request: pb.DeleteEventSchemaRequest, context: Context
    ) -> pb.DeleteEventSchemaResponse:
        async with rpc(context, "DeleteEventSchema", self.keys, Scope.ADMIN):
            await self.types.delete_schema(request.type)
            return pb.DeleteEventSchemaResponse()
        raise AssertionError(_UNREACHABLE)

    async def SendTestEvent(self, request: pb.SendTestEventRequest, context: Context) -> pb.DeliveryRecord:
        async with rpc(context, "SendTestEvent", self.keys, Scope.ADMIN):
            data = _json_data(request.data) if request.HasField("data") else None
            record = await self.subscriptions.send_test(request.subscription_id, type=request.type or None, data=data)
            return delivery_to_proto(record)
        raise AssertionError(_UNREACHABLE)
