"""`eventbus.v1.Admin`, events: one event with the raw inbound request it came from (REST `GET /v1/events/{id}` reads
the same service method, so both show the same request, redacted the same way when it was stored)."""

from __future__ import annotations

from eventbus.auth import KeyRing, Scope
from eventbus.bus.services import Services
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert import stored_event_to_proto, to_timestamp
from eventbus.store.sources import StoredRequest
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import eventbus_pb2

_UNREACHABLE = "unreachable: rpc() aborts on error"


def raw_request_to_proto(stored: StoredRequest) -> pb.RawRequest:
    request = stored.request
    message = pb.RawRequest(
        request_id=stored.request_id,
        received_at=to_timestamp(stored.received_at),
        method=request.method,
        path=request.path,
        query=[pb.Header(name=k, value=v) for k, v in request.query],
        headers=[pb.Header(name=k, value=v) for k, v in request.headers],
        body=request.body,
    )
    if request.remote is not None:
        message.remote = request.remote
    return message


class EventsAdmin:
    """Mixed into `AdminServicer`, which sets the key ring and the services."""

    keys: KeyRing
    services: Services

    async def GetEvent(self, request: eventbus_pb2.GetEventRequest, context: Context) -> pb.EventDetail:
        async with rpc(context, "GetEvent", self.keys, Scope.ADMIN):
            bus = self.services.bus
            if request.WhichOneof("ref") == "source_id":
                detail = await bus.get_event_detail(source=request.source_id.source, id=request.source_id.id)
            else:
                detail = await bus.get_event_detail(event_id=request.event_id)
            answer = pb.EventDetail(event=stored_event_to_proto(detail.event))
            if detail.raw_request is not None:
                answer.raw_request.CopyFrom(raw_request_to_proto(detail.raw_request))
            return answer
        raise AssertionError(_UNREACHABLE)
