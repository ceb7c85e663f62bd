"""The client's side of a Subscribe stream: deliveries in, acks out, reconnect and rejoin when it drops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import structlog

from eventbus.errors import DeliveryLeaseLostError, EventBusError, UnavailableError
from eventbus.grpc.convert import from_timestamp, stored_event_from_proto, to_duration
from eventbus.grpc.errors import error_from_rpc
from eventbus.model import StoredEvent
from eventbus.v1 import eventbus_pb2

if TYPE_CHECKING:
    from eventbus.client import EventBusClient

log = structlog.get_logger("eventbus.client")
_RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)


@dataclass(eq=False)
class Delivery:
    """One event handed to this consumer. Settle it exactly once: `ack`, `retry` or `drop`."""

    delivery_id: str
    attempt: int
    first_attempt_at: datetime
    ack_deadline: datetime
    event: StoredEvent
    _stream: _Stream = field(repr=False)

    async def ack(self) -> None:
        """Done with it. Raises `DeliveryLeaseLostError` when the lease was lost (it was or will be redelivered)."""
        await self._stream.settle(self, eventbus_pb2.Ack.SUCCESS, None)

    async def retry(self, delay: timedelta | None = None) -> None:
        """Try again after `delay`, or by the group's retry schedule when None (it counts as an attempt)."""
        await self._stream.settle(self, eventbus_pb2.Ack.RETRY, delay)

    async def drop(self) -> None:
        """Give up on it: it goes dead with reason `dropped`."""
        await self._stream.settle(self, eventbus_pb2.Ack.DROP, None)

    async def extend(self, by: timedelta | None = None) -> None:
        """Push the ack deadline to now + `by` (default: the stream's ack deadline)."""
        await self._stream.extend(self, by)


class _Stream:
    """One connection's stream; replaced by a new one on reconnect (its deliveries then lose their leases)."""

    def __init__(
        self,
        owed: dict[str, int],
        call: grpc.aio.StreamStreamCall[eventbus_pb2.SubscribeRequest, eventbus_pb2.SubscribeResponse],
    ) -> None:
        self.call = call
        self.outbox: asyncio.Queue[eventbus_pb2.SubscribeRequest] = asyncio.Queue()
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.alive = True
        self.owed = owed
        self.inbox: asyncio.Queue[Delivery | BaseException] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write())
        self.reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Ack results are handled here, so a consumer awaiting `ack()` never waits on its own loop."""
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    raise UnavailableError("the server ended the stream")
                assert isinstance(response, eventbus_pb2.SubscribeResponse)
                which = response.WhichOneof("response")
                if which == "ack_results":
                    self.resolve(response.ack_results)
                elif which == "deliveries":
                    for item in response.deliveries.deliveries:
                        self.inbox.put_nowait(
                            Delivery(
                                delivery_id=item.delivery_id,
                                attempt=item.attempt,
                                first_attempt_at=from_timestamp(item.first_attempt_at),
                                ack_deadline=from_timestamp(item.ack_deadline),
                                event=stored_event_from_proto(item.event),
                                _stream=self,
                            )
                        )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are closing it
            # grpc cancels a call whose write failed: to the consumer that is a broken stream like any other.
            self.broken(UnavailableError("the stream was cancelled"))
        except BaseException as exc:
            self.broken(exc)

    def broken(self, exc: BaseException) -> None:
        """The stream is unusable: fail what waits on it and wake the consumer so it reconnects."""
        if not self.alive:
            return
        self.fail(error_from_rpc(exc) if isinstance(exc, grpc.aio.AioRpcError) else UnavailableError(str(exc)))
        self.inbox.put_nowait(exc)

    async def _write(self) -> None:
        try:
            while True:
                request = await self.outbox.get()
                if request.WhichOneof("request") == "acks":
                    # Coalesce every ack already queued into one message.
                    while not self.outbox.empty() and self.outbox._queue[0].WhichOneof("request") == "acks":  # type: ignore[attr-defined]
                        request.acks.acks.extend(self.outbox.get_nowait().acks.acks)
                await self.call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            self.broken(UnavailableError("the stream ended before the request was sent"))

    def _expect(self, delivery_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(delivery_id, []).append(future)
        return future

    async def settle(self, delivery: Delivery, status: int, delay: timedelta | None) -> None:
        if not self.alive:
            raise DeliveryLeaseLostError("the stream this delivery came on is gone; it will be redelivered")
        ack = eventbus_pb2.Ack(delivery_id=delivery.delivery_id, status=status)  # type: ignore[arg-type]
        if delay is not None:
            ack.retry_after.CopyFrom(to_duration(delay))
        future = self._expect(delivery.delivery_id)
        self.outbox.put_nowait(eventbus_pb2.SubscribeRequest(acks=eventbus_pb2.Acks(acks=[ack])))
        await future
        if status != eventbus_pb2.Ack.RETRY:
            self.owed.pop(delivery.delivery_id, None)  # done for good; a retried one is still owed

    async def extend(self, delivery: Delivery, by: timedelta | None) -> None:
        if not self.alive:
            raise DeliveryLeaseLostError("the stream this delivery came on is gone; it will be redelivered")
        extend = eventbus_pb2.Extend(delivery_ids=[delivery.delivery_id])
        if by is not None:
            extend.by.CopyFrom(to_duration(by))
        future = self._expect(delivery.delivery_id)
        self.outbox.put_nowait(eventbus_pb2.SubscribeRequest(extend=extend))
        await future

    def resolve(self, results: eventbus_pb2.AckResults) -> None:
        for result in results.results:
            futures = self.waiting.get(result.delivery_id)
            if not futures:
                continue
            future = futures.pop(0)
            if not futures:
                del self.waiting[result.delivery_id]
            if future.done():
                continue
            if result.ok:
                future.set_result(None)
            else:
                future.set_exception(DeliveryLeaseLostError(result.reason or "the server refused the ack"))

    def fail(self, error: EventBusError) -> None:
        self.alive = False
        for futures in self.waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(DeliveryLeaseLostError(f"{error.message}; it will be redelivered"))
        self.waiting.clear()

    async def close(self) -> None:
        self.fail(UnavailableError("the subscription was closed"))
        self.inbox.put_nowait(UnavailableError("the subscription was closed"))
        tasks = [t for t in (self.writer, self.reader) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.call.cancel()


class Subscription:
    """An async iterator of deliveries; reconnects with backoff and rejoins the same group after a drop.

    An ephemeral group (no name) cannot be rejoined: a reconnect joins a new one that starts at the lowest
    event handed out and not yet acked (see `_rejoin_request`); events published meanwhile are delivered.
    """

    def __init__(self, client: EventBusClient, join: eventbus_pb2.Join, *, reconnect: bool) -> None:
        self.client = client
        self.join = join
        self.reconnect = reconnect
        self.group: str | None = None
        self.subscription_id: str | None = None
        self.reconnects = 0
        self.last_seq = 0  # highest seq delivered
        # delivery id → seq of what was handed out and is not done with: where an ephemeral group resumes
        self._owed: dict[str, int] = {}
        self.joined = asyncio.Event()
        self._stream: _Stream | None = None
        self._closed = False
        self._iterator: AsyncIterator[Delivery] | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        """The next delivery; one iterator per subscription, so `anext(sub)` and `async for` share it."""
        if self._iterator is None:
            self._iterator = self._iterate()
        return await anext(self._iterator)

    async def __aenter__(self) -> Subscription:
        """Join now, so the group exists (and join errors surface) before the first delivery is awaited."""
        await self.start()
        return self

    async def start(self) -> None:
        if self._stream is None:
            try:
                self._stream = await self._open()
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._iterator is not None:
            try:
                await self._iterator.aclose()  # type: ignore[attr-defined]
            except RuntimeError:
                pass  # another task is inside `anext`: closing the stream below ends it
            self._iterator = None
        if self._stream is not None:
            await self._stream.close()
            self._stream = None

    def _rejoin_request(self) -> eventbus_pb2.Join:
        """The join to send. An ephemeral group is new on every connection (the old one went with its stream),
        so it resumes at the lowest seq handed out and not yet acked or dropped (acked ones after it come
        again: at least once), else after the last seq it saw, instead of replaying from the original start.
        What the old group still held back (delayed events not yet due) went with it: use a durable group
        when that matters."""
        if self.join.group or self.last_seq == 0:
            return self.join
        resume = min(self._owed.values()) if self._owed else self.last_seq + 1
        self._owed.clear()  # the new group sends those again, under new delivery ids
        join = eventbus_pb2.Join()
        join.CopyFrom(self.join)
        join.start.seq = resume
        return join

    async def _open(self) -> _Stream:
        call = self.client.stub.Subscribe(metadata=self.client._metadata)
        stream = _Stream(self._owed, call)
        try:
            await call.write(eventbus_pb2.SubscribeRequest(join=self._rejoin_request()))
            response = await call.read()
            if response is grpc.aio.EOF:
                raise UnavailableError("the server ended the stream before joining")
        except BaseException:
            await stream.close()  # its writer task and call must not outlive a failed join
            raise
        assert isinstance(response, eventbus_pb2.SubscribeResponse)
        joined = response.joined
        self.group, self.subscription_id = joined.group, joined.subscription_id
        self.joined.set()
        stream.start_reading()
        return stream

    async def _iterate(self) -> AsyncIterator[Delivery]:
        backoff = 0.05
        while not self._closed:
            stream: _Stream | None = None
            try:
                if self._stream is not None and self._stream.alive:
                    stream = self._stream  # opened by `start()`
                else:
                    if self._stream is not None:
                        await self._stream.close()
                        self._stream = None
                    stream = self._stream = await self._open()
                    if self._closed:  # close() ran while we were joining: do not keep the new stream
                        return
                backoff = 0.05
                while True:
                    item = await stream.inbox.get()
                    if isinstance(item, BaseException):
                        raise item
                    self.last_seq = max(self.last_seq, item.event.seq)
                    self._owed[item.delivery_id] = item.event.seq
                    yield item
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if exc.code() not in _RETRYABLE or not self.reconnect:
                    raise error_from_rpc(exc) from None
            except (UnavailableError, asyncio.InvalidStateError):
                if self._closed:
                    return
                if not self.reconnect:
                    raise
            finally:
                if stream is not None:
                    await stream.close()  # its unsettled deliveries lose their leases and come back later
                self._stream = None
            self.reconnects += 1
            log.info("subscription_reconnecting", group=self.join.group or None, backoff_s=round(backoff, 3))
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff = min(backoff * 2, 2.0)
