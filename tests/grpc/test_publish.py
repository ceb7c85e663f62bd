"""Publish over gRPC: round trips byte-exact, dedup on (source, id), atomic batches and field-level errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import InvalidArgumentError
from eventbus.model import DataKind, Event
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc

from .helpers import Consumer, RawStream, ce, event, publish_marker, violations

BINARY = bytes(range(256)) * 3 + b"\x00\xff\xfe"


async def test_round_trip_through_the_client_keeps_data_attributes_and_extensions(
    client: EventBusClient, clock: ManualClock
) -> None:
    moment = datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-3)))
    sent = [
        Event.create(
            type="order.paid",
            source="/shop",
            id="json-1",
            subject="order-42",
            time=moment,
            data={"total": 1999, "currency": "BRL", "items": [{"sku": "a", "qty": 2}], "note": "ação"},
            dataschema="https://example.com/schemas/order.json",
            extensions={
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "count": 7,
                "vip": True,
                "blob": b"\x00\x01\xfe",
                "deadline": datetime(2026, 2, 1, tzinfo=UTC),
            },
        ),
        Event.create(type="order.note", source="/shop", id="text-1", data="héllo wörld\n"),
        Event.create(
            type="order.file", source="/shop", id="bin-1", data=BINARY, datacontenttype="application/octet-stream"
        ),
    ]
    async with Consumer(client.subscribe("round-trip", ["order.*"])) as consumer:
        results = await client.publish(sent)
        received = [await consumer.next() for _ in sent]
        for delivery in received:
            await delivery.ack()

    assert [r.duplicate for r in results] == [False, False, False]
    assert [r.id for r in results] == ["json-1", "text-1", "bin-1"]
    assert all(r.event_id.startswith("evt_") for r in results)
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    by_id = {d.event.event.id: d for d in received}
    for original, result in zip(sent, results, strict=True):
        delivery = by_id[original.id]
        assert delivery.attempt == 1
        assert delivery.event.event_id == result.event_id
        assert delivery.event.seq == result.seq
        assert delivery.event.received_at == clock.now()
        assert delivery.event.event == original

    json_event = by_id["json-1"].event.event
    assert json_event.data_kind is DataKind.JSON
    assert json_event.datacontenttype == "application/json"
    assert json.loads(json_event.data or b"") == sent[0].json_data()
    assert json_event.time == moment
    assert json_event.extensions["count"] == 7
    assert json_event.extensions["vip"] is True
    assert by_id["text-1"].event.event.data == "héllo wörld\n".encode()
    assert by_id["text-1"].event.event.data_kind is DataKind.TEXT
    assert by_id["bin-1"].event.event.data == BINARY
    assert by_id["bin-1"].event.event.data_kind is DataKind.BINARY

    stored = await client.get_event(results[2].event_id)
    assert stored.event.data == BINARY


async def test_round_trip_through_raw_stubs_is_byte_exact(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    joined = await stream.join(group="raw", patterns=["order.**"])
    assert joined.created and not joined.ephemeral
    assert joined.group == "raw"
    assert joined.subscription_id.startswith("sub_")
    assert joined.max_in_flight == 100
    assert joined.ack_deadline.ToTimedelta() == timedelta(seconds=30)

    binary = ce("order.file.uploaded", id="raw-bin", binary=BINARY, datacontenttype="application/octet-stream")
    binary.attributes["time"].ce_timestamp.FromDatetime(datetime(2025, 12, 31, 23, 59, 59, 999999))
    binary.attributes["priority"].ce_integer = -5
    binary.attributes["flag"].ce_boolean = False
    binary.attributes["raw"].ce_bytes = b"\x00\x80\xff"
    text = ce("order.paid", id="raw-json", text='{"b": 2, "a": [1, 2.5, null]}', datacontenttype="application/json")
    response = await stub.Publish(pb.PublishRequest(events=[binary, text]))
    assert [(r.id, r.source, r.duplicate) for r in response.results] == [
        ("raw-bin", "/shop", False),
        ("raw-json", "/shop", False),
    ]
    assert response.results[1].seq == response.results[0].seq + 1

    first, second = await stream.delivery(), await stream.delivery()
    assert first.event.event_id == response.results[0].event_id
    assert first.event.seq == response.results[0].seq
    assert first.attempt == 1
    assert first.delivery_id.startswith("dlv_")
    got = first.event.event
    assert got.WhichOneof("data") == "binary_data"
    assert got.binary_data == BINARY
    assert (got.id, got.source, got.spec_version, got.type) == ("raw-bin", "/shop", "1.0", "order.file.uploaded")
    assert got.attributes["time"].ce_timestamp.ToDatetime() == datetime(2025, 12, 31, 23, 59, 59, 999999)
    assert got.attributes["priority"].ce_integer == -5
    assert got.attributes["flag"].WhichOneof("attr") == "ce_boolean"
    assert got.attributes["flag"].ce_boolean is False
    assert got.attributes["raw"].ce_bytes == b"\x00\x80\xff"
    assert got.attributes["datacontenttype"].ce_string == "application/octet-stream"

    assert second.event.event.WhichOneof("data") == "text_data"
    assert json.loads(second.event.event.text_data) == {"b": 2, "a": [1, 2.5, None]}
    results = await stream.acks(
        pb.Ack(delivery_id=first.delivery_id, status=pb.Ack.SUCCESS),
        pb.Ack(delivery_id=second.delivery_id, status=pb.Ack.SUCCESS),
    )
    assert [(r.delivery_id, r.ok) for r in results] == [(first.delivery_id, True), (second.delivery_id, True)]
    assert await stream.finish() == grpc.StatusCode.OK

    stored = await stub.GetEvent(pb.GetEventRequest(event_id=response.results[0].event_id))
    assert stored.event.binary_data == BINARY


async def test_republishing_the_same_source_and_id_is_a_duplicate_delivered_once(client: EventBusClient) -> None:
    async with Consumer(client.subscribe("dedup")) as consumer:
        [first] = await client.publish(event(id="pay-1", data={"n": 1}))
        [again] = await client.publish(event(id="pay-1", data={"n": 2}))
        [other_source] = await client.publish(event(id="pay-1", source="/other", data={"n": 3}))
        assert first.duplicate is False
        assert again.duplicate is True
        assert (again.event_id, again.seq) == (first.event_id, first.seq)
        assert other_source.duplicate is False
        assert other_source.event_id != first.event_id

        delivered = await consumer.next()
        assert delivered.event.event_id == first.event_id
        assert delivered.event.event.json_data() == {"n": 1}  # the original is kept
        await delivered.ack()
        assert (await consumer.next()).event.event_id == other_source.event_id
        marker = await publish_marker(client)
        assert (await consumer.next()).event.event_id == marker.event_id  # no second copy of pay-1

    stored = await client.get_event(source="/shop", id="pay-1")
    assert stored.event_id == first.event_id
    assert stored.event.json_data() == {"n": 1}


async def test_the_dedup_window_is_24_hours(client: EventBusClient, clock: ManualClock) -> None:
    [first] = await client.publish(event(id="daily"))
    clock.advance(timedelta(hours=24))
    [inside] = await client.publish(event(id="daily"))
    assert (inside.duplicate, inside.event_id) == (True, first.event_id)
    clock.advance(timedelta(seconds=1))
    [outside] = await client.publish(event(id="daily"))
    assert outside.duplicate is False
    assert outside.event_id != first.event_id
    assert outside.seq > first.seq


async def test_a_batch_repeating_an_event_stores_it_once(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    response = await stub.Publish(pb.PublishRequest(events=[ce(id="x"), ce(id="y"), ce(id="x")]))
    first, _, repeat = response.results
    assert (first.duplicate, repeat.duplicate) == (False, True)
    assert (repeat.event_id, repeat.seq) == (first.event_id, first.seq)
    listed = await stub.ListEvents(pb.ListEventsRequest())
    assert [e.event.id for e in listed.events] == ["x", "y"]


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        (ce("order paid!"), "events[1].type"),
        (ce(id=""), "events[1].id"),
        (ce(source=""), "events[1].source"),
        (ce(source="not a uri"), "events[1].source"),
        (ce(datacontenttype="not-a-media-type"), "events[1].attributes.datacontenttype"),
        (ce(time="yesterday"), "events[1].attributes.time"),
        (ce(**{"Bad-Name": "x"}), "events[1].attributes.Bad-Name"),
        (ce(**{"subject": ""}), "events[1].attributes.subject"),
    ],
    ids=["type", "id", "source", "source-uri", "datacontenttype", "time", "attribute-name", "empty-subject"],
)
async def test_a_batch_with_one_bad_event_is_refused_whole(
    stub: eventbus_pb2_grpc.EventBusStub, broken: object, field: str
) -> None:
    batch = [ce(id="good-0"), broken, ce(id="good-2")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=batch))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert list(found) == [field], found
    assert found[field]
    assert (caught.value.details() or "").startswith(f"{field}:")

    listed = await stub.ListEvents(pb.ListEventsRequest())
    assert list(listed.events) == []
    assert listed.next_page_token == ""


async def test_the_status_message_names_the_same_field_as_the_violation(
    stub: eventbus_pb2_grpc.EventBusStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[ce(id="a", **{"Bad-Name": "x"})]))
    [field] = violations(caught.value)
    assert field == "events[0].attributes.Bad-Name"
    assert (caught.value.details() or "").startswith(f"{field}:")


async def test_a_wrong_spec_version_names_spec_version(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    bad = ce(id="v2")
    bad.spec_version = "0.3"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["events[0].spec_version"]


async def test_a_time_attribute_of_the_wrong_kind_is_refused(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    bad = ce(id="t")
    bad.attributes["time"].ce_integer = 5
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["events[0].attributes.time"]


async def test_several_problems_in_one_event_are_all_named(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[ce(id="ok"), ce("bad type", id="", source="")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(caught.value)) == {"events[1].id", "events[1].source", "events[1].type"}


async def test_attribute_and_core_problems_are_reported_together(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[ce("bad type", id="x", time="nope")]))
    assert set(violations(caught.value)) == {"events[0].type", "events[0].attributes.time"}


async def test_empty_and_oversized_batches_are_refused(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["events"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[ce(id=f"e{i}") for i in range(1001)]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["events"]
    assert "1001" in (caught.value.details() or "")

    response = await stub.Publish(pb.PublishRequest(events=[ce(id=f"e{i}") for i in range(1000)]))
    assert len(response.results) == 1000
    assert not any(r.duplicate for r in response.results)


async def test_an_event_over_one_mebibyte_is_refused(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    too_big = ce(id="big", binary=b"x" * (1024 * 1024 + 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Publish(pb.PublishRequest(events=[ce(id="small"), too_big]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["events[1].data"]
    assert list((await stub.ListEvents(pb.ListEventsRequest())).events) == []

    fits = ce(id="fits", binary=b"x" * (1024 * 1024 - 1024))
    response = await stub.Publish(pb.PublishRequest(events=[fits]))
    assert response.results[0].duplicate is False


async def test_client_errors_carry_the_field_violations(client: EventBusClient) -> None:
    bad = Event(id="x", source="/shop", type="order..paid")  # bypasses client-side validation
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish([event(id="ok"), bad])
    assert [v.field for v in caught.value.violations] == ["events[1].type"]
