"""Joining a group: start positions, delayed publish, ack results on the wire, and refused joins."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import FailedPreconditionError, InvalidArgumentError
from eventbus.grpc.convert import to_timestamp
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc

from .helpers import MARKER_TYPE, Consumer, RawStream, ce, event, publish_marker, violations


async def _publish_history(client: EventBusClient, clock: ManualClock) -> list[int]:
    """Five events, ten seconds apart (seq 1..5 in a fresh store)."""
    seqs = []
    for i in range(5):
        [result] = await client.publish(event(id=f"h{i}"))
        seqs.append(result.seq)
        clock.advance(10)
    return seqs


async def _drain(consumer: Consumer, client: EventBusClient) -> list[int]:
    """Every seq the consumer gets before a fresh marker (which proves nothing else was due)."""
    marker = await publish_marker(client)
    seqs = []
    while True:
        delivery = await consumer.next()
        await delivery.ack()
        if delivery.event.event_id == marker.event_id:
            return seqs
        if delivery.event.event.type != MARKER_TYPE:  # earlier markers are events too
            seqs.append(delivery.event.seq)


async def test_a_new_group_starting_at_a_seq_gets_events_from_there(client: EventBusClient, clock: ManualClock) -> None:
    seqs = await _publish_history(client, clock)
    async with Consumer(client.subscribe("from-seq", start=seqs[2])) as consumer:
        assert await _drain(consumer, client) == seqs[2:]


async def test_a_new_group_starting_at_a_time_gets_events_received_since(
    client: EventBusClient, clock: ManualClock
) -> None:
    start = clock.now()
    seqs = await _publish_history(client, clock)
    at_third = start + timedelta(seconds=20)  # exactly when the third event was received: inclusive
    async with Consumer(client.subscribe("from-time", start=at_third)) as consumer:
        assert await _drain(consumer, client) == seqs[2:]
    async with Consumer(client.subscribe("from-between", start=at_third + timedelta(seconds=1))) as consumer:
        assert await _drain(consumer, client) == seqs[3:]


async def test_earliest_gets_everything_and_latest_only_new_events(client: EventBusClient, clock: ManualClock) -> None:
    seqs = await _publish_history(client, clock)
    async with Consumer(client.subscribe("from-earliest", start="earliest")) as consumer:
        assert await _drain(consumer, client) == seqs
    async with Consumer(client.subscribe("from-latest", start="latest")) as consumer:
        [new] = await client.publish(event(id="new"))
        assert await _drain(consumer, client) == [new.seq]
    async with Consumer(client.subscribe("default-start")) as consumer:
        assert await _drain(consumer, client) == []


async def test_the_start_of_an_existing_group_is_ignored(client: EventBusClient, clock: ManualClock) -> None:
    await _publish_history(client, clock)
    async with Consumer(client.subscribe("kept")) as consumer:
        assert await _drain(consumer, client) == []
    async with Consumer(client.subscribe("kept", start="earliest")) as consumer:
        assert consumer.subscription.group == "kept"
        assert await _drain(consumer, client) == []


async def test_start_seq_zero_is_refused(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.call.write(pb.SubscribeRequest(join=pb.Join(group="zero", start=pb.StartPosition(seq=0))))
    error = await stream.failure()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(error)) == ["join.start.seq"]


async def test_not_before_delays_delivery(client: EventBusClient, clock: ManualClock) -> None:
    async with Consumer(client.subscribe("delayed")) as consumer:
        [later] = await client.publish(event(id="later"), not_before=clock.now() + timedelta(seconds=30))
        [now] = await client.publish(event(id="now"))
        first = await consumer.next()
        assert first.event.event_id == now.event_id  # published after, delivered first
        await first.ack()

        clock.advance(29.9)
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()
        status = await client.get_group("delayed")
        assert (status.pending, status.leased) == (1, 0)

        clock.advance(0.2)
        delayed = await consumer.next()
        assert (delayed.event.event_id, delayed.attempt) == (later.event_id, 1)
        assert delayed.event.received_at < clock.now() - timedelta(seconds=29)
        await delayed.ack()


async def test_not_before_applies_to_a_backfilling_group(client: EventBusClient, clock: ManualClock) -> None:
    [later] = await client.publish(event(id="later"), not_before=clock.now() + timedelta(seconds=30))
    async with Consumer(client.subscribe("late-joiner", start="earliest")) as consumer:
        marker = await publish_marker(client)
        got = await consumer.next()
        assert got.event.event_id == marker.event_id
        await got.ack()
        clock.advance(30)
        delayed = await consumer.next()
        assert delayed.event.event_id == later.event_id


async def test_ack_results_report_unknown_stale_and_unspecified_acks_without_ending_the_stream(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient
) -> None:
    stream = RawStream(stub)
    await stream.join(group="acks")
    await stub.Publish(pb.PublishRequest(events=[ce(id="a1")]))
    delivery = await stream.delivery()

    unknown = await stream.ack("dlv_00000000000000000000000000")
    assert (unknown.delivery_id, unknown.ok) == ("dlv_00000000000000000000000000", False)
    assert "unknown" in unknown.reason

    unspecified = await stream.ack(delivery.delivery_id, status=pb.Ack.STATUS_UNSPECIFIED)
    assert (unspecified.delivery_id, unspecified.ok) == (delivery.delivery_id, False)
    assert "status" in unspecified.reason
    assert (await client.get_group("acks")).leased == 1  # refused acks change nothing

    # Seeking the group replaces its deliveries: the lease this stream holds is lost.
    await client.seek_group("acks", 1)
    replacement = await stream.delivery()
    assert replacement.delivery_id != delivery.delivery_id
    assert replacement.event.event_id == delivery.event.event_id
    stale = await stream.ack(delivery.delivery_id)
    assert (stale.delivery_id, stale.ok) == (delivery.delivery_id, False)
    assert "lease lost" in stale.reason

    await stub.Publish(pb.PublishRequest(events=[ce(id="a2")]))
    later = await stream.delivery()
    assert later.event.event.id == "a2"
    results = await stream.acks(
        pb.Ack(delivery_id=replacement.delivery_id, status=pb.Ack.SUCCESS),
        pb.Ack(delivery_id=later.delivery_id, status=pb.Ack.SUCCESS),
        pb.Ack(delivery_id=later.delivery_id, status=pb.Ack.SUCCESS),  # twice: the second is unknown
    )
    assert [(r.delivery_id, r.ok) for r in results] == [
        (replacement.delivery_id, True),
        (later.delivery_id, True),
        (later.delivery_id, False),
    ]
    status = await client.get_group("acks")
    assert (status.succeeded, status.lag) == (2, 0)
    assert await stream.finish() == grpc.StatusCode.OK


async def test_an_ack_after_a_redelivery_on_the_same_stream_settles_it(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient, clock: ManualClock
) -> None:
    stream = RawStream(stub)
    await stream.join(group="late", ack_deadline=timedelta(seconds=5))
    await stub.Publish(pb.PublishRequest(events=[ce(id="l1")]))
    first = await stream.delivery()
    clock.advance(6)
    again = await stream.delivery()  # redelivered on the same stream, same id
    assert (again.delivery_id, again.attempt) == (first.delivery_id, 2)
    result = await stream.ack(first.delivery_id)
    assert result.ok, result.reason
    assert (await client.get_group("late")).succeeded == 1
    stream.cancel()


async def test_an_extend_of_an_unknown_delivery_is_reported(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.join(group="ext-unknown")
    [result] = await stream.extend(["dlv_nope"], timedelta(seconds=5))
    assert (result.delivery_id, result.ok) == ("dlv_nope", False)
    assert result.reason
    await stub.Publish(pb.PublishRequest(events=[ce(id="still-works")]))
    assert (await stream.delivery()).event.event.id == "still-works"
    stream.cancel()


async def test_a_second_join_on_the_same_stream_is_refused(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.join(group="twice")
    await stream.call.write(pb.SubscribeRequest(join=pb.Join(group="twice")))
    error = await stream.failure()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(error)) == ["join"]


async def test_a_stream_must_start_with_a_join(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.call.write(pb.SubscribeRequest(acks=pb.Acks(acks=[pb.Ack(delivery_id="dlv_x", status=1)])))
    error = await stream.failure()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(error)) == ["join"]


@pytest.mark.parametrize(
    ("join", "field"),
    [
        (pb.Join(group="bad", patterns=["order.**.x"]), "join.patterns[0]"),
        (pb.Join(group="bad", patterns=["order.*", "order..x"]), "join.patterns[1]"),
        (pb.Join(group="bad", patterns=[""]), "join.patterns[0]"),
        (pb.Join(group="-starts-with-dash"), "join.group"),
        (pb.Join(group="has space"), "join.group"),
        (pb.Join(group="x" * 129), "join.group"),
        (pb.Join(group="bad", max_in_flight=10_001), "join.max_in_flight"),
        (pb.Join(group="bad", ack_deadline=pb.Join().ack_deadline.__class__(nanos=50_000_000)), "join.ack_deadline"),
        (pb.Join(group="bad", ack_deadline=pb.Join().ack_deadline.__class__(seconds=13 * 3600)), "join.ack_deadline"),
    ],
    ids=[
        "double-star-not-last",
        "empty-segment",
        "empty-pattern",
        "group-dash",
        "group-space",
        "group-too-long",
        "max-in-flight",
        "deadline-short",
        "deadline-long",
    ],
)
async def test_bad_joins_are_invalid_arguments_naming_the_field(
    stub: eventbus_pb2_grpc.EventBusStub, join: pb.Join, field: str
) -> None:
    stream = RawStream(stub)
    await stream.call.write(pb.SubscribeRequest(join=join))
    error = await stream.failure()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(error)) == [field]


@pytest.mark.parametrize(
    "bad_filter",
    ['{"$bogus": 1}', '{"data.amount": {"$gt": 1, "$nope": 2}}', "[1, 2]", "{not json", '{"$or": 5}'],
)
async def test_bad_filters_are_invalid_arguments_under_join_filter(
    stub: eventbus_pb2_grpc.EventBusStub, bad_filter: str
) -> None:
    stream = RawStream(stub)
    await stream.call.write(pb.SubscribeRequest(join=pb.Join(group="bad-filter", filter=bad_filter)))
    error = await stream.failure()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    [field] = violations(error)
    assert field == "join.filter" or field.startswith("join.filter."), field


async def test_a_refused_join_creates_no_group(client: EventBusClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        async with Consumer(client.subscribe("never", ["order.**.x"], reconnect=False)):
            pass
    assert [v.field for v in caught.value.violations] == ["join.patterns[0]"]
    groups, _ = await client.list_groups()
    assert groups == []


async def test_joins_that_conflict_with_the_group_are_failed_preconditions(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient
) -> None:
    first = RawStream(stub)
    joined = await first.join(group="shared", patterns=["order.*", "user.*"], filter='{"data.vip": true}')
    assert joined.created
    # Same patterns (another order, `>` spelling of `**` aside) and the same filter (other spacing): allowed.
    same = RawStream(stub)
    again = await same.join(group="shared", patterns=["user.*", "order.*"], filter='{ "data.vip" : true }')
    assert (again.created, again.subscription_id) == (False, joined.subscription_id)

    for conflicting in (
        pb.Join(group="shared", patterns=["order.*"], filter='{"data.vip": true}'),
        pb.Join(group="shared", patterns=["order.*", "user.*"]),
        pb.Join(group="shared", patterns=["order.*", "user.*"], filter='{"data.vip": false}'),
    ):
        stream = RawStream(stub)
        await stream.call.write(pb.SubscribeRequest(join=conflicting))
        error = await stream.failure()
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, conflicting
        assert "shared" in (error.details() or "")

    with pytest.raises(FailedPreconditionError):
        async with Consumer(client.subscribe("shared", ["order.*"], reconnect=False)):
            pass
    assert await first.finish() == grpc.StatusCode.OK
    assert await same.finish() == grpc.StatusCode.OK


async def test_pattern_spellings_that_normalise_alike_do_not_conflict(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    first = RawStream(stub)
    await first.join(group="norm", patterns=["order.**"])
    second = RawStream(stub)
    joined = await second.join(group="norm", patterns=["order.>"])
    assert joined.created is False
    first.cancel()
    second.cancel()


async def test_an_ephemeral_group_disappears_when_its_stream_ends(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient
) -> None:
    stream = RawStream(stub)
    joined = await stream.join(patterns=["order.*"])
    assert joined.ephemeral and joined.created
    assert joined.group == joined.subscription_id
    groups, _ = await client.list_groups()
    assert [(g.name, g.ephemeral, g.active_streams) for g in groups] == [(joined.group, True, 1)]

    await stub.Publish(pb.PublishRequest(events=[ce(id="eph")]))
    delivery = await stream.delivery()
    assert delivery.event.event.id == "eph"
    assert await stream.finish() == grpc.StatusCode.OK  # half-close: the server has left the group

    groups, _ = await client.list_groups()
    assert groups == []
    with pytest.raises(Exception, match="does not exist"):
        await client.get_group(joined.group)


async def test_an_ephemeral_client_subscription_disappears_after_close(client: EventBusClient) -> None:
    subscription = client.subscribe(None, ["order.*"])
    async with Consumer(subscription):
        name = subscription.group
        assert name is not None
        assert [g.name for g in (await client.list_groups())[0]] == [name]
    # The client cancels its stream; the server leaves the group when it sees the cancellation.
    for _ in range(500):
        if not (await client.list_groups())[0]:
            break
        await asyncio.sleep(0.01)  # polling for the server's cleanup, not waiting for time to pass
    assert (await client.list_groups())[0] == []


async def test_a_durable_group_outlives_its_streams(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient
) -> None:
    stream = RawStream(stub)
    await stream.join(group="durable")
    assert await stream.finish() == grpc.StatusCode.OK
    await stub.Publish(pb.PublishRequest(events=[ce(id="while-away")]))
    status = await client.get_group("durable")
    assert (status.active_streams, status.pending) == (0, 1)
    back = RawStream(stub)
    rejoined = await back.join(group="durable")
    assert rejoined.created is False
    assert (await back.delivery()).event.event.id == "while-away"
    back.cancel()


async def test_time_start_uses_the_timestamp_message(stub: eventbus_pb2_grpc.EventBusStub, clock: ManualClock) -> None:
    await stub.Publish(pb.PublishRequest(events=[ce(id="old")]))
    clock.advance(5)
    await stub.Publish(pb.PublishRequest(events=[ce(id="new")]))
    stream = RawStream(stub)
    await stream.join(group="ts", start=pb.StartPosition(time=to_timestamp(clock.now())))
    assert (await stream.delivery()).event.event.id == "new"
    stream.cancel()


async def test_a_start_seq_beyond_the_end_skips_events_before_it(client: EventBusClient) -> None:
    before = await client.publish([event(id=f"b{i}") for i in range(2)])
    start = before[-1].seq + 3  # two events from now are still before the start
    async with Consumer(client.subscribe("ahead", start=start)) as consumer:
        after = await client.publish([event(id=f"a{i}") for i in range(3)])
        assert [r.seq for r in after] == [start - 2, start - 1, start]
        assert await _drain(consumer, client) == [start]


async def test_a_start_time_in_the_future_skips_events_received_before_it(
    client: EventBusClient, clock: ManualClock
) -> None:
    start = clock.now() + timedelta(seconds=60)
    async with Consumer(client.subscribe("future", start=start)) as consumer:
        await client.publish(event(id="too-early"))
        clock.advance(60)
        [on_time] = await client.publish(event(id="on-time"))
        assert await _drain(consumer, client) == [on_time.seq]
