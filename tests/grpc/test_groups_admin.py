"""Admin over gRPC: list groups (paged), inspect one (lag, pending, leased, dead, age), seek, delete."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import DeliveryLeaseLostError, InvalidArgumentError, NotFoundError
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2_grpc
from eventbus.v1 import eventbus_pb2 as pb

from .helpers import Consumer, RawStream, ce, event, publish_marker, violations


async def _create_groups(stub: eventbus_pb2_grpc.EventBusStub, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        stream = RawStream(stub)
        ids.append((await stream.join(group=name, patterns=["order.*"])).subscription_id)
        assert await stream.finish() == grpc.StatusCode.OK
    return ids


async def test_list_groups_pages(stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient) -> None:
    names = [f"group-{i}" for i in range(5)]
    ids = await _create_groups(stub, names)
    seen, token, pages = [], "", 0
    while True:
        page, token = await client.list_groups(page_size=2, page_token=token)
        pages += 1
        assert len(page) <= 2
        seen.extend(page)
        if not token:
            break
    assert pages == 3
    assert sorted(g.name for g in seen) == names
    assert sorted(g.subscription_id for g in seen) == sorted(ids)
    assert all(g.patterns == ("order.*",) and not g.ephemeral and g.active_streams == 0 for g in seen)

    everything, token = await client.list_groups()
    assert token == ""
    assert [g.subscription_id for g in everything] == [g.subscription_id for g in seen]


async def test_list_groups_refuses_bad_paging(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    for request, field in (
        (admin_pb2.ListGroupsRequest(page_token="not-a-token"), "page_token"),
        (admin_pb2.ListGroupsRequest(page_size=1001), "page_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin_stub.ListGroups(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(violations(caught.value)) == [field]


async def test_get_group_shows_the_backlog(client: EventBusClient, clock: ManualClock) -> None:
    created_at = clock.now()
    async with Consumer(client.subscribe("stats", ["order.*"], filter='{"data.n": {"$gte": 0}}', max_in_flight=1)) as c:
        results = await client.publish([event(id=f"s{i}", data={"n": i}) for i in range(4)])
        first = await c.next()
        assert first.event.event_id == results[0].event_id
        await first.drop()
        second = await c.next()
        assert second.event.event_id == results[1].event_id
        clock.advance(10)

        status = await client.get_group("stats")
        assert status.name == "stats"
        assert status.subscription_id.startswith("sub_")
        assert status.patterns == ("order.*",)
        assert status.filter == '{"data.n":{"$gte":0}}'
        assert status.ephemeral is False
        assert status.created_at == created_at
        assert status.active_streams == 1
        assert (status.lag, status.pending, status.leased, status.dead, status.succeeded) == (3, 2, 1, 1, 0)
        assert status.oldest_pending_age == timedelta(seconds=10)

        await second.ack()
        for expected in results[2:]:
            delivery = await c.next()
            assert delivery.event.event_id == expected.event_id
            await delivery.ack()
        status = await client.get_group("stats")
        assert (status.lag, status.pending, status.leased, status.dead, status.succeeded) == (0, 0, 0, 1, 3)
        assert status.oldest_pending_age is None
        by_id = await client.get_group(status.subscription_id)  # a group can be named by its sub_ id
        assert by_id.name == "stats"


async def test_seek_to_a_seq_redelivers_from_there(client: EventBusClient) -> None:
    async with Consumer(client.subscribe("seeker")) as consumer:
        results = await client.publish([event(id=f"k{i}") for i in range(5)])
        for expected in results:
            delivery = await consumer.next()
            assert delivery.event.event_id == expected.event_id
            await delivery.ack()
        assert (await client.get_group("seeker")).succeeded == 5

        status = await client.seek_group("seeker", results[2].seq)
        assert status.name == "seeker"
        again = []
        for _ in results[2:]:
            delivery = await consumer.next()
            again.append(delivery)
            await delivery.ack()
        assert [d.event.event_id for d in again] == [r.event_id for r in results[2:]]
        assert all(d.attempt == 1 for d in again)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id  # nothing before seq 3 came back
        await got.ack()
    assert (await client.get_group("seeker")).succeeded == 9


async def test_seek_to_a_time_and_forward_past_the_backlog(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("time-seeker", max_in_flight=1)) as consumer:
        [old] = await client.publish(event(id="old"))
        clock.advance(10)  # less than the ack deadline: the held lease must not run out
        cut = clock.now()
        [new] = await client.publish(event(id="new"))
        held = await consumer.next()
        assert held.event.event_id == old.event_id  # leased, not acked; "new" is pending

        await client.seek_group("time-seeker", cut)  # the held lease is replaced
        with pytest.raises(DeliveryLeaseLostError):
            await held.ack()  # settling the lost lease frees its in-flight slot
        redelivered = await consumer.next()
        assert redelivered.event.event_id == new.event_id
        await redelivered.ack()
        status = await client.get_group("time-seeker")
        assert (status.lag, status.succeeded) == (0, 1)

        # Seeking past the end leaves nothing pending.
        await client.publish(event(id="later"))
        waiting = await consumer.next()
        await client.seek_group("time-seeker", waiting.event.seq + 1)
        status = await client.get_group("time-seeker")
        assert (status.lag, status.pending, status.leased) == (0, 0, 0)


async def test_seek_beyond_the_end_skips_events_before_the_position(client: EventBusClient) -> None:
    async with Consumer(client.subscribe("far-seek")) as consumer:
        [first] = await client.publish(event(id="f0"))
        delivery = await consumer.next()
        await delivery.ack()
        target = first.seq + 3
        await client.seek_group("far-seek", target)
        later = await client.publish([event(id=f"f{i}") for i in range(1, 4)])
        assert later[-1].seq == target
        got = await consumer.next()
        assert got.event.seq == target


async def test_seek_requires_a_position(admin_stub: admin_pb2_grpc.AdminStub, client: EventBusClient) -> None:
    async with Consumer(client.subscribe("needs-pos")):
        pass
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.SeekGroup(admin_pb2.SeekGroupRequest(name="needs-pos"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["to"]
    with pytest.raises(InvalidArgumentError):
        await client.seek_group("needs-pos", 0)


async def test_delete_group(client: EventBusClient, stub: eventbus_pb2_grpc.EventBusStub) -> None:
    await _create_groups(stub, ["doomed", "kept"])
    await stub.Publish(pb.PublishRequest(events=[ce(id="d1")]))
    assert (await client.get_group("doomed")).pending == 1
    await client.delete_group("doomed")
    with pytest.raises(NotFoundError):
        await client.get_group("doomed")
    with pytest.raises(NotFoundError):
        await client.delete_group("doomed")
    with pytest.raises(NotFoundError):
        await client.seek_group("doomed", 1)
    assert [g.name for g in (await client.list_groups())[0]] == ["kept"]

    # The name is free again: a new group, empty, starting now.
    stream = RawStream(stub)
    joined = await stream.join(group="doomed", patterns=["order.*"])
    assert joined.created
    assert (await client.get_group("doomed")).lag == 0
    assert await stream.finish() == grpc.StatusCode.OK


async def test_unknown_and_unnamed_groups(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    for call, request in (
        (admin_stub.GetGroup, admin_pb2.GetGroupRequest(name="ghost")),
        (admin_stub.DeleteGroup, admin_pb2.DeleteGroupRequest(name="ghost")),
        (admin_stub.SeekGroup, admin_pb2.SeekGroupRequest(name="ghost", seq=1)),
        (admin_stub.GetGroup, admin_pb2.GetGroupRequest(name="sub_01JZZZZZZZZZZZZZZZZZZZZZZZ")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.GetGroup(admin_pb2.GetGroupRequest(name=""))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["name"]


async def test_deleting_a_group_with_a_live_stream(
    client: EventBusClient, stub: eventbus_pb2_grpc.EventBusStub
) -> None:
    stream = RawStream(stub)
    await stream.join(group="live")
    await client.delete_group("live")
    await stub.Publish(pb.PublishRequest(events=[ce(id="after-delete")]))
    with pytest.raises(NotFoundError):
        await client.get_group("live")
    stream.cancel()
