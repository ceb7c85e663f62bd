"""`eventbus.v1.EventBus`: Publish, Subscribe, GetEvent, ListEvents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from eventbus import tracing
from eventbus.auth import KeyRing, Scope
from eventbus.bus.groups import ConsumerGroups, JoinRequest, group_name
from eventbus.bus.service import Bus
from eventbus.bus.session import AckOutcome, AckRequest, AckStatus, GroupSession
from eventbus.errors import EventBusError, InvalidArgumentError, UnavailableError
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert import (
    event_from_proto,
    from_duration,
    from_timestamp,
    stored_event_to_proto,
    to_duration,
    to_timestamp,
)
from eventbus.logs import bind_event_ids
from eventbus.store.base import LeasedDelivery, StartPosition
from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc as pb_grpc

_ACK_STATUS = {pb.Ack.SUCCESS: AckStatus.SUCCESS, pb.Ack.RETRY: AckStatus.RETRY, pb.Ack.DROP: AckStatus.DROP}


REFUSAL_READ_WAIT = 2.0  # seconds a keyless Subscribe is read for its join before it is refused


class EventBusServicer(pb_grpc.EventBusServicer):
    def __init__(self, bus: Bus, groups: ConsumerGroups, keys: KeyRing) -> None:
        self.bus = bus
        self.groups = groups
        self.keys = keys

    async def Publish(self, request: pb.PublishRequest, context: Context) -> pb.PublishResponse:
        async with rpc(context, "Publish", self.keys, Scope.PUBLISH):
            events = [event_from_proto(e, f"events[{i}]") for i, e in enumerate(request.events)]
            not_before = from_timestamp(request.not_before) if request.HasField("not_before") else None
            results = await tracing.publish(events, lambda stamped: self.bus.publish(stamped, not_before=not_before))
            bind_event_ids(r.event_id for r in results)
            return pb.PublishResponse(
                results=[
                    pb.PublishResult(event_id=r.event_id, seq=r.seq, duplicate=r.duplicate, id=r.id, source=r.source)
                    for r in results
                ]
            )
        raise AssertionError("unreachable: rpc() aborts on error")

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> ce_pb.StoredEvent:
        async with rpc(context, "GetEvent", self.keys, Scope.SUBSCRIBE):
            which = request.WhichOneof("ref")
            if which == "source_id":
                stored = await self.bus.get_event(source=request.source_id.source, id=request.source_id.id)
            else:
                stored = await self.bus.get_event(event_id=request.event_id)
            return stored_event_to_proto(stored)
        raise AssertionError("unreachable: rpc() aborts on error")

    async def ListEvents(self, request: pb.ListEventsRequest, context: Context) -> pb.ListEventsResponse:
        async with rpc(context, "ListEvents", self.keys, Scope.SUBSCRIBE):
            events, token = await self.bus.list_events(
                page_size=request.page_size,
                page_token=request.page_token,
                patterns=list(request.patterns),
                source=request.source or None,
                subject=request.subject or None,
                received_after=from_timestamp(request.received_after) if request.HasField("received_after") else None,
                received_before=(
                    from_timestamp(request.received_before) if request.HasField("received_before") else None
                ),
            )
            return pb.ListEventsResponse(events=[stored_event_to_proto(e) for e in events], next_page_token=token)
        raise AssertionError("unreachable: rpc() aborts on error")

    async def Subscribe(
        self, request_iterator: AsyncIterator[pb.SubscribeRequest], context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        async with rpc(context, "Subscribe", self.keys, Scope.SUBSCRIBE, authorize_later=True) as authorize:
            try:
                authorize()
            except EventBusError:
                # Refused, but only once the join the client writes first has arrived (for 2 s at most, so no
                # keyless stream holds a call slot): a refusal that reached grpc's client mid-write came out as
                # "Internal error from Core" (INTERNAL) instead of UNAUTHENTICATED.
                with contextlib.suppress(StopAsyncIteration, TimeoutError):
                    await asyncio.wait_for(anext(request_iterator), REFUSAL_READ_WAIT)
                raise
            try:
                first = await anext(request_iterator)
            except StopAsyncIteration:
                return
            if first.WhichOneof("request") != "join":
                raise InvalidArgumentError.for_field("join", "the first message of a stream must be a join")
            session = await self.groups.join(join_from_proto(first.join))
            try:
                yield pb.SubscribeResponse(
                    joined=pb.Joined(
                        group=group_name(session.subscription),
                        subscription_id=session.subscription.id,
                        created=session.created,
                        ephemeral=session.subscription.ephemeral,
                        max_in_flight=session.max_in_flight,
                        ack_deadline=to_duration(session.ack_deadline),
                    )
                )
                async for response in _stream(session, request_iterator):
                    yield response
            finally:
                await asyncio.shield(session.close())


def _ack_from_proto(ack: pb.Ack) -> AckRequest:
    problem = None
    try:
        retry_after = ack.retry_after.ToTimedelta() if ack.HasField("retry_after") else None
    except OverflowError:
        retry_after, problem = None, "retry_after is out of range"
    if retry_after is not None and retry_after.total_seconds() < 0:
        problem, retry_after = "retry_after must not be negative", None
    return AckRequest(
        delivery_id=ack.delivery_id, status=_ACK_STATUS.get(ack.status), retry_after=retry_after, problem=problem
    )


def join_from_proto(join: pb.Join) -> JoinRequest:
    start = StartPosition()
    which = join.start.WhichOneof("position")
    if which == "seq":
        start = StartPosition(edge="seq", seq=join.start.seq)
    elif which == "time":
        start = StartPosition(edge="time", time=from_timestamp(join.start.time))
    elif which == "edge":
        if join.start.edge == pb.StartPosition.EARLIEST:
            start = StartPosition(edge="earliest")
        elif join.start.edge not in (pb.StartPosition.LATEST, pb.StartPosition.EDGE_UNSPECIFIED):
            raise InvalidArgumentError.for_field("join.start.edge", f"unknown start position {join.start.edge}")
    return JoinRequest(
        group=join.group,
        patterns=tuple(join.patterns),
        filter=join.filter or None,
        start=start,
        max_in_flight=join.max_in_flight,
        ack_deadline=from_duration(join.ack_deadline, "join.ack_deadline") if join.HasField("ack_deadline") else None,
    )


def _delivery_to_proto(delivery: LeasedDelivery) -> pb.Delivery:
    return pb.Delivery(
        delivery_id=delivery.delivery_id,
        attempt=delivery.attempt,
        first_attempt_at=to_timestamp(delivery.first_attempt_at),
        event=stored_event_to_proto(delivery.event),
        ack_deadline=to_timestamp(delivery.lease_expires_at),
    )


async def _stream(
    session: GroupSession, requests: AsyncIterator[pb.SubscribeRequest]
) -> AsyncIterator[pb.SubscribeResponse]:
    """Deliveries and ack results, interleaved; ends when the client stops sending (half-close)."""
    # Bounded: a client that sends acks but stops reading their results is slowed down, not buffered for.
    outbox: asyncio.Queue[pb.SubscribeResponse | BaseException | None] = asyncio.Queue(maxsize=64)
    unsent: list[str] = []

    async def read_requests() -> None:
        try:
            async for request in requests:
                which = request.WhichOneof("request")
                if which == "acks":
                    outcomes = await session.settle([_ack_from_proto(a) for a in request.acks.acks])
                elif which == "extend":
                    try:
                        by = request.extend.by.ToTimedelta() if request.extend.HasField("by") else None
                    except OverflowError:
                        by = timedelta(days=-1)  # answered below like any other bad value
                    if by is not None and by.total_seconds() < 0:
                        reason = "extend.by must not be negative or out of range"
                        outcomes = [AckOutcome(i, False, reason) for i in request.extend.delivery_ids]
                    else:
                        outcomes = await session.extend(list(request.extend.delivery_ids), by)
                else:
                    raise InvalidArgumentError.for_field(
                        which or "request", "join is only allowed as the first message"
                    )
                results = [pb.AckResult(delivery_id=o.delivery_id, ok=o.ok, reason=o.reason) for o in outcomes]
                await outbox.put(pb.SubscribeResponse(ack_results=pb.AckResults(results=results)))
            await outbox.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the stream, which ends with the right status
            await outbox.put(exc)

    async def send_deliveries() -> None:
        try:
            while True:
                batch = await session.next_batch()
                try:
                    await outbox.put(
                        pb.SubscribeResponse(
                            deliveries=pb.Deliveries(deliveries=[_delivery_to_proto(d) for d in batch])
                        )
                    )
                except asyncio.CancelledError:
                    unsent.extend(d.delivery_id for d in batch)
                    raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await outbox.put(exc)

    sender = asyncio.create_task(send_deliveries())

    async def end_on_shutdown() -> None:
        # Stop sending, give the consumer the grace period to ack what it holds, then tell it to reconnect.
        await session.bus.shutting_down.wait()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        # Leased but never sent (queued here, or cut off mid-send): the consumer cannot ack those; give them back.
        queued: list[str] = []
        while not outbox.empty():
            item = outbox.get_nowait()
            if isinstance(item, pb.SubscribeResponse) and item.WhichOneof("response") == "deliveries":
                queued.extend(d.delivery_id for d in item.deliveries.deliveries)
            else:
                await outbox.put(item)
                break
        await session.release([*unsent, *queued])
        while session.held(session.bus.clock.now()) > 0:
            await asyncio.sleep(0.02)
        await outbox.put(UnavailableError("the server is shutting down: reconnect to another one or retry"))

    tasks = [asyncio.create_task(read_requests()), sender, asyncio.create_task(end_on_shutdown())]
    try:
        while True:
            item = await outbox.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
