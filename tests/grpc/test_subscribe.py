"""Subscribe: fan-out to groups, sharing within a group, acks, retries, drops, ack deadlines, flow control."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import DeliveryLeaseLostError
from eventbus.subscription import Delivery
from eventbus.v1 import admin_pb2, eventbus_pb2_grpc
from eventbus.v1 import eventbus_pb2 as pb

from .helpers import WAIT, Consumer, RawStream, ce, event, publish_marker


async def test_each_group_gets_every_event(client: EventBusClient) -> None:
    async with (
        Consumer(client.subscribe("billing", ["order.*"])) as billing,
        Consumer(client.subscribe("shipping", ["order.*"])) as shipping,
    ):
        results = await client.publish([event(id=f"o{i}") for i in range(5)])
        expected = [r.event_id for r in results]
        for consumer in (billing, shipping):
            got = []
            for _ in expected:
                delivery = await consumer.next()
                got.append(delivery.event.event_id)
                await delivery.ack()
            assert got == expected  # one subject-less stream: seq order
    for name in ("billing", "shipping"):
        status = await client.get_group(name)
        assert (status.succeeded, status.lag) == (5, 0)


async def test_patterns_and_filters_select_what_a_group_receives(client: EventBusClient) -> None:
    big_brl = '{"data.amount": {"$gte": 100}, "data.currency": "BRL"}'
    async with (
        Consumer(client.subscribe("orders", ["order.**"])) as orders,
        Consumer(client.subscribe("big", ["order.paid"], filter=big_brl)) as big,
    ):
        published = await client.publish(
            [
                event("order.paid", id="small", data={"amount": 5, "currency": "BRL"}),
                event("user.created", id="user", data={"amount": 500, "currency": "BRL"}),
                event("order.paid", id="usd", data={"amount": 500, "currency": "USD"}),
                event("order.item.added", id="item", data={"amount": 500, "currency": "BRL"}),
                event("order.paid", id="match", data={"amount": 100, "currency": "BRL"}),
            ]
        )
        ids = {r.id: r.event_id for r in published}
        got_orders = [(await orders.next()).event.event.id for _ in range(4)]
        assert got_orders == ["small", "usd", "item", "match"]
        match = await big.next()
        assert match.event.event_id == ids["match"]
        await match.ack()
    status = await client.get_group("big")
    assert (status.succeeded, status.lag, status.dead) == (1, 0, 0)  # only one delivery was ever created


async def test_two_streams_in_one_group_split_the_events(client: EventBusClient) -> None:
    group = "workers"
    seen: dict[str, list[str]] = {"a": [], "b": []}
    total = 40

    async def work(name: str, consumer: Consumer, done: asyncio.Event) -> None:
        while not done.is_set():
            delivery = await consumer.next()
            seen[name].append(delivery.event.event_id)
            await delivery.ack()
            if sum(map(len, seen.values())) >= total:
                done.set()

    async with (
        Consumer(client.subscribe(group, max_in_flight=2)) as a,
        Consumer(client.subscribe(group, max_in_flight=2)) as b,
    ):
        assert (await client.get_group(group)).active_streams == 2
        results = await client.publish([event(id=f"job-{i}") for i in range(total)])
        done = asyncio.Event()
        workers = [asyncio.create_task(work("a", a, done)), asyncio.create_task(work("b", b, done))]
        await asyncio.wait_for(done.wait(), WAIT * 2)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        marker = await publish_marker(client)
        # Nothing else is due: the marker is the next delivery of whichever stream takes it.
        first = await asyncio.wait(
            [asyncio.ensure_future(a.next()), asyncio.ensure_future(b.next())], return_when=asyncio.FIRST_COMPLETED
        )
        done_tasks, pending = first
        for task in pending:
            task.cancel()
        assert [t.result().event.event_id for t in done_tasks] == [marker.event_id]

    everything = seen["a"] + seen["b"]
    assert len(everything) == total
    assert sorted(everything) == sorted(r.event_id for r in results)  # each exactly once
    assert seen["a"] and seen["b"]
    status = await client.get_group(group)
    assert (status.succeeded, status.dead) == (total, 0)


async def test_retry_with_a_delay_comes_back_no_sooner(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("retry-delay")) as consumer:
        [published] = await client.publish(event(id="r1"))
        first = await consumer.next()
        assert first.attempt == 1
        await first.retry(timedelta(seconds=60))
        status = await client.get_group("retry-delay")
        assert (status.pending, status.leased) == (1, 0)

        clock.advance(59.9)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id  # the retry is not due yet
        await got.ack()

        clock.advance(0.2)
        again = await consumer.next()
        assert again.event.event_id == published.event_id
        assert again.delivery_id == first.delivery_id
        assert again.attempt == 2
        assert again.first_attempt_at == first.first_attempt_at
        await again.ack()
    status = await client.get_group("retry-delay")
    assert (status.succeeded, status.lag, status.dead) == (2, 0, 0)


async def test_retry_without_a_delay_follows_the_schedule(client: EventBusClient, clock: ManualClock) -> None:
    # Default schedule: first retry after 5 s with ±20 % jitter, so in [4 s, 6 s].
    async with Consumer(client.subscribe("retry-schedule")) as consumer:
        [published] = await client.publish(event(id="r2"))
        first = await consumer.next()
        await first.retry()

        clock.advance(3.999)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()

        clock.advance(2.002)  # 6.001 s after the retry
        again = await consumer.next()
        assert again.event.event_id == published.event_id
        assert again.attempt == 2
        await again.retry()  # second retry: 5 min ±20 %

        clock.advance(239.9)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()
        clock.advance(120.2)
        third = await consumer.next()
        assert (third.event.event_id, third.attempt) == (published.event_id, 3)
        await third.ack()


async def test_the_last_retry_of_the_schedule_goes_dead(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("exhaust")) as consumer:
        await client.publish(event(id="doomed"))
        attempts = []
        group = await client.admin.GetGroup(admin_pb2.GetGroupRequest(name="exhaust"))
        schedule = [d.ToTimedelta() for d in group.retry_schedule]
        assert schedule == [timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)]
        for delay in [*schedule, timedelta(0)]:
            delivery = await consumer.next()
            attempts.append(delivery.attempt)
            await delivery.retry()
            clock.advance(delay * 1.2 + timedelta(seconds=1))  # past the jittered delay
        assert attempts == list(range(1, 9))
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()
    status = await client.get_group("exhaust")
    assert (status.dead, status.succeeded, status.lag) == (1, 1, 0)


async def test_drop_goes_dead_and_is_never_redelivered(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("drops")) as consumer:
        await client.publish(event(id="poison"))
        poison = await consumer.next()
        await poison.drop()
        status = await client.get_group("drops")
        assert (status.dead, status.pending, status.leased, status.lag) == (1, 0, 0, 0)

        clock.advance(timedelta(days=1))
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()
        with pytest.raises(DeliveryLeaseLostError):
            await poison.ack()  # settled already
    status = await client.get_group("drops")
    assert (status.dead, status.succeeded, status.lag) == (1, 1, 0)


async def test_an_unacked_delivery_returns_after_the_ack_deadline(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("deadline", ack_deadline=timedelta(seconds=10))) as consumer:
        [published] = await client.publish(event(id="slow"))
        first = await consumer.next()
        assert first.ack_deadline == clock.now() + timedelta(seconds=10)

        clock.advance(9.9)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()

        clock.advance(0.2)
        again = await consumer.next()
        assert (again.event.event_id, again.delivery_id, again.attempt) == (
            published.event_id,
            first.delivery_id,
            2,
        )
        assert again.ack_deadline == clock.now() + timedelta(seconds=10)
        await again.ack()
    status = await client.get_group("deadline")
    assert (status.succeeded, status.lag) == (2, 0)


async def test_extend_postpones_the_redelivery(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("extend", ack_deadline=timedelta(seconds=10))) as consumer:
        [published] = await client.publish(event(id="long-job"))
        first = await consumer.next()
        clock.advance(5)
        await first.extend(timedelta(seconds=20))  # new deadline: 25 s after the delivery

        clock.advance(6)  # 11 s: past the original deadline
        marker = await publish_marker(client, "m1")
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()

        clock.advance(13.9)  # 24.9 s
        marker = await publish_marker(client, "m2")
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()

        clock.advance(0.2)  # 25.1 s: past the extended deadline
        again = await consumer.next()
        assert (again.event.event_id, again.attempt) == (published.event_id, 2)
        await again.ack()
        with pytest.raises(DeliveryLeaseLostError):
            await first.extend()  # settled: nothing to extend


async def test_extend_without_by_uses_the_stream_ack_deadline(
    stub: eventbus_pb2_grpc.EventBusStub, clock: ManualClock
) -> None:
    stream = RawStream(stub)
    await stream.join(group="extend-default", ack_deadline=timedelta(seconds=10))
    await stub.Publish(pb.PublishRequest(events=[ce(id="e1")]))
    delivery = await stream.delivery()
    clock.advance(8)
    [result] = await stream.extend([delivery.delivery_id])
    assert result.ok, result.reason
    clock.advance(9.9)  # 17.9 s: before the new deadline (18 s)
    await stub.Publish(pb.PublishRequest(events=[ce(id="marker")]))
    assert (await stream.delivery()).event.event.id == "marker"
    clock.advance(0.2)
    again = await stream.delivery()
    assert (again.event.event.id, again.attempt) == ("e1", 2)
    stream.cancel()


async def test_max_in_flight_is_never_exceeded(stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient) -> None:
    stream = RawStream(stub)
    joined = await stream.join(group="flow", max_in_flight=3)
    assert joined.max_in_flight == 3
    response = await stub.Publish(pb.PublishRequest(events=[ce(id=f"f{i}") for i in range(20)]))

    held = [await stream.delivery() for _ in range(3)]
    status = await client.get_group("flow")
    assert (status.leased, status.pending) == (3, 17)
    assert stream.received == 3

    acked = 0
    order: list[int] = [d.event.seq for d in held]
    while acked < 20:
        delivery = held.pop(0)
        await stream.call.write(
            pb.SubscribeRequest(acks=pb.Acks(acks=[pb.Ack(delivery_id=delivery.delivery_id, status=pb.Ack.SUCCESS)]))
        )
        acked += 1
        while len(held) < 3 and stream.received < 20:
            while not stream.deliveries:
                await stream.read()
                assert stream.received - acked <= 3, "more deliveries outstanding than max_in_flight"
            new = stream.deliveries.popleft()
            held.append(new)
            order.append(new.event.seq)
    while len(stream.results) < 20:
        await stream.read()
    assert all(r.ok for r in stream.results)
    assert order == [r.seq for r in response.results]
    assert (await client.get_group("flow")).succeeded == 20
    assert await stream.finish() == grpc.StatusCode.OK


async def test_acking_frees_room_for_the_next_delivery(client: EventBusClient) -> None:
    async with Consumer(client.subscribe("room", max_in_flight=1)) as consumer:
        results = await client.publish([event(id=f"x{i}") for i in range(3)])
        first = await consumer.next()
        assert first.event.event_id == results[0].event_id
        status = await client.get_group("room")
        assert (status.leased, status.pending) == (1, 2)
        assert consumer.empty()
        await first.ack()
        second: Delivery = await consumer.next()
        assert second.event.event_id == results[1].event_id
        await second.ack()
        assert (await consumer.next()).event.event_id == results[2].event_id


async def test_a_stream_that_leaves_gives_its_deliveries_back_at_once(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    leaving = RawStream(stub)
    await leaving.join(group="handover")
    await stub.Publish(pb.PublishRequest(events=[ce(id=f"h{i}") for i in range(3)]))
    held = [await leaving.delivery() for _ in range(3)]
    staying = RawStream(stub)
    await staying.join(group="handover")
    assert await leaving.finish() == grpc.StatusCode.OK  # no clock movement: not by the ack deadline
    taken = [await staying.delivery() for _ in range(3)]
    assert [(d.delivery_id, d.attempt) for d in taken] == [(d.delivery_id, 2) for d in held]
    staying.cancel()


async def test_retry_with_a_zero_delay_is_redelivered_at_once(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.join(group="retry-now")
    await stub.Publish(pb.PublishRequest(events=[ce(id="now")]))
    first = await stream.delivery()
    result = await stream.ack(first.delivery_id, pb.Ack.RETRY, timedelta(0))
    assert result.ok, result.reason
    again = await stream.delivery()
    assert (again.delivery_id, again.attempt) == (first.delivery_id, 2)
    stream.cancel()


async def test_a_negative_retry_after_is_refused_in_ack_results(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.join(group="negative")
    await stub.Publish(pb.PublishRequest(events=[ce(id="neg")]))
    delivery = await stream.delivery()
    result = await stream.ack(delivery.delivery_id, pb.Ack.RETRY, retry_after=timedelta(seconds=-5))
    assert not result.ok
    assert "retry_after" in result.reason
    # The stream stays open and the delivery is still held by it: a proper ack now succeeds.
    assert (await stream.ack(delivery.delivery_id)).ok
