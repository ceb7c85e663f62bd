"""Helpers for the gRPC behaviour tests: raw Subscribe streams, a pumped client subscription, event builders."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import grpc

from eventbus.client import EventBusClient
from eventbus.grpc.convert import to_duration
from eventbus.grpc.errors import field_violations
from eventbus.model import Event, PublishResult
from eventbus.subscription import Delivery, Subscription
from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc

WAIT = 5.0  # seconds of real time to wait for something that must happen
MARKER_TYPE = "test.marker"


def ce(
    type: str = "order.paid",
    *,
    id: str | None = None,
    source: str = "/shop",
    text: str | None = None,
    binary: bytes | None = None,
    **attributes: str,
) -> ce_pb.CloudEvent:
    """A CloudEvent message; keyword attributes become string attributes (`subject="x"`)."""
    message = ce_pb.CloudEvent(id=str(uuid.uuid4()) if id is None else id, source=source, spec_version="1.0", type=type)
    for name, value in attributes.items():
        message.attributes[name].ce_string = value
    if text is not None:
        message.text_data = text
    if binary is not None:
        message.binary_data = binary
    return message


def event(type: str = "order.paid", *, data: object = None, **kwargs: Any) -> Event:
    return Event.create(type=type, source=kwargs.pop("source", "/shop"), data=data, **kwargs)


async def publish_marker(client: EventBusClient, name: str = "marker") -> PublishResult:
    """An event every catch-all group receives: when it arrives first, nothing was due before it."""
    [result] = await client.publish(Event.create(type=MARKER_TYPE, source="/test", id=f"{name}-{uuid.uuid4()}"))
    return result


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    return dict(field_violations(exc))


class RawStream:
    """A Subscribe stream on the raw stub: responses are read in order and sorted into deliveries and ack results."""

    def __init__(self, stub: eventbus_pb2_grpc.EventBusStub, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.call = stub.Subscribe(metadata=tuple(metadata))
        self.deliveries: deque[pb.Delivery] = deque()
        self.results: deque[pb.AckResult] = deque()
        self.received = 0  # deliveries read so far

    async def join(self, **join: Any) -> pb.Joined:
        await self.call.write(pb.SubscribeRequest(join=pb.Join(**join)))
        response = await asyncio.wait_for(self.call.read(), WAIT)
        assert response is not grpc.aio.EOF, "the stream ended before joining"
        assert response.WhichOneof("response") == "joined", response
        return response.joined

    async def read(self) -> str:
        """Read one response; returns its kind."""
        response = await asyncio.wait_for(self.call.read(), WAIT)
        assert response is not grpc.aio.EOF, "the server ended the stream"
        kind = response.WhichOneof("response")
        if kind == "deliveries":
            self.deliveries.extend(response.deliveries.deliveries)
            self.received += len(response.deliveries.deliveries)
        elif kind == "ack_results":
            self.results.extend(response.ack_results.results)
        else:
            raise AssertionError(f"unexpected response {response}")
        return kind

    async def delivery(self) -> pb.Delivery:
        while not self.deliveries:
            await self.read()
        return self.deliveries.popleft()

    async def result(self) -> pb.AckResult:
        while not self.results:
            await self.read()
        return self.results.popleft()

    async def acks(self, *acks: pb.Ack) -> list[pb.AckResult]:
        await self.call.write(pb.SubscribeRequest(acks=pb.Acks(acks=list(acks))))
        return [await self.result() for _ in acks]

    async def ack(
        self, delivery_id: str, status: int = pb.Ack.SUCCESS, retry_after: timedelta | None = None
    ) -> pb.AckResult:
        ack = pb.Ack(delivery_id=delivery_id, status=status)  # type: ignore[arg-type]
        if retry_after is not None:
            ack.retry_after.CopyFrom(to_duration(retry_after))
        [result] = await self.acks(ack)
        return result

    async def extend(self, delivery_ids: Sequence[str], by: timedelta | None = None) -> list[pb.AckResult]:
        extend = pb.Extend(delivery_ids=list(delivery_ids))
        if by is not None:
            extend.by.CopyFrom(to_duration(by))
        await self.call.write(pb.SubscribeRequest(extend=extend))
        return [await self.result() for _ in delivery_ids]

    async def finish(self) -> grpc.StatusCode:
        """Half-close and read to the end: the server has left the group when this returns."""
        await self.call.done_writing()
        while await asyncio.wait_for(self.call.read(), WAIT) is not grpc.aio.EOF:
            pass
        return await self.call.code()

    async def failure(self) -> grpc.aio.AioRpcError:
        """Read until the stream fails; returns the error it failed with."""
        try:
            while True:
                response = await asyncio.wait_for(self.call.read(), WAIT)
                if response is grpc.aio.EOF:
                    raise AssertionError(f"the stream ended with {await self.call.code()}, not an error")
        except grpc.aio.AioRpcError as exc:
            return exc

    def cancel(self) -> None:
        self.call.cancel()


class Consumer:
    """A client subscription read by a background task, so a test can join first and publish after."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for delivery in self.subscription:
            await self.queue.put(delivery)

    async def __aenter__(self) -> Consumer:
        self._task = asyncio.create_task(self._pump())
        joined = asyncio.create_task(self.subscription.joined.wait())
        done, _ = await asyncio.wait({joined, self._task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if joined not in done:
            joined.cancel()
            if self._task in done:
                self._task.result()  # the join failed: raise its error
            raise AssertionError("the subscription did not join in time")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.subscription.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    def empty(self) -> bool:
        return self.queue.empty()
