"""Reading the log: ListEvents pages and filters, GetEvent by id and by (source, id)."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import InvalidArgumentError, NotFoundError
from eventbus.grpc.convert import to_timestamp
from eventbus.model import StoredEvent
from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc

from .helpers import ce, event, violations


async def _all_pages(client: EventBusClient, **query: object) -> tuple[list[StoredEvent], int]:
    """Every page until the token is empty, and how many pages that took."""
    found: list[StoredEvent] = []
    token, pages = "", 0
    while True:
        page, token = await client.list_events(page_token=token, **query)  # type: ignore[arg-type]
        pages += 1
        found.extend(page)
        if not token:
            return found, pages
        assert pages < 100, "the pages never end"


async def test_list_events_pages_without_gaps_or_duplicates(client: EventBusClient) -> None:
    results = await client.publish([event(id=f"p{i}") for i in range(25)])
    page, token = await client.list_events(page_size=10)
    assert [e.seq for e in page] == [r.seq for r in results[:10]]
    assert token

    found, pages = await _all_pages(client, page_size=10)
    assert pages == 3
    assert [e.seq for e in found] == [r.seq for r in results]
    assert [e.event_id for e in found] == [r.event_id for r in results]
    assert [e.event.id for e in found] == [f"p{i}" for i in range(25)]

    found, _ = await _all_pages(client, page_size=25)
    assert len(found) == 25
    found, _ = await _all_pages(client)  # 0 means 100
    assert len(found) == 25


async def test_paging_with_a_pattern_filter_keeps_only_matches_in_order(client: EventBusClient) -> None:
    batch = [event("order.paid" if i % 3 == 0 else "user.seen", id=f"m{i}") for i in range(60)]
    results = await client.publish(batch)
    expected = [r.seq for r, e in zip(results, batch, strict=True) if e.type == "order.paid"]
    for size in (1, 3, 7, 20):
        found, _ = await _all_pages(client, page_size=size, patterns=["order.*"])
        assert [e.seq for e in found] == expected, size
    found, _ = await _all_pages(client, page_size=4, patterns=["nothing.matches"])
    assert found == []


async def test_list_events_filters_by_source_subject_and_time(client: EventBusClient, clock: ManualClock) -> None:
    t0 = clock.now()
    await client.publish([event(id="a", subject="s1"), event(id="b", source="/other", subject="s2")])
    clock.advance(10)
    t1 = clock.now()
    await client.publish([event(id="c", subject="s1"), event("user.seen", id="d", source="/other")])
    clock.advance(10)
    t2 = clock.now()
    await client.publish(event(id="e", subject="s2"))

    async def ids(**query: object) -> list[str]:
        found, _ = await _all_pages(client, page_size=2, **query)
        return [e.event.id for e in found]

    assert await ids() == ["a", "b", "c", "d", "e"]
    assert await ids(source="/other") == ["b", "d"]
    assert await ids(subject="s1") == ["a", "c"]
    assert await ids(source="/shop", subject="s2") == ["e"]
    assert await ids(received_after=t1) == ["c", "d", "e"]  # inclusive
    assert await ids(received_before=t1) == ["a", "b"]  # exclusive
    assert await ids(received_after=t1, received_before=t2) == ["c", "d"]
    assert await ids(received_after=t0 + timedelta(seconds=1), received_before=t1) == []
    assert await ids(patterns=["user.*"], source="/other") == ["d"]
    assert await ids(patterns=["order.*", "user.*"], received_after=t1) == ["c", "d", "e"]


async def test_list_events_refuses_bad_requests(stub: eventbus_pb2_grpc.EventBusStub, clock: ManualClock) -> None:
    await stub.Publish(pb.PublishRequest(events=[ce(id="x")]))
    cases = [
        (pb.ListEventsRequest(page_token="garbage!"), "page_token"),
        (pb.ListEventsRequest(page_token="c2VxOmFiYw"), "page_token"),  # "seq:abc"
        (pb.ListEventsRequest(page_size=1001), "page_size"),
        (pb.ListEventsRequest(patterns=["order.**.x"]), "patterns[0]"),
        (
            pb.ListEventsRequest(received_after=to_timestamp(clock.now()), received_before=to_timestamp(clock.now())),
            "received_before",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListEvents(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert list(violations(caught.value)) == [field], request


async def test_a_page_token_from_the_server_resumes_after_the_page(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    await stub.Publish(pb.PublishRequest(events=[ce(id=f"t{i}") for i in range(3)]))
    first = await stub.ListEvents(pb.ListEventsRequest(page_size=2))
    assert [e.event.id for e in first.events] == ["t0", "t1"]
    second = await stub.ListEvents(pb.ListEventsRequest(page_size=2, page_token=first.next_page_token))
    assert [e.event.id for e in second.events] == ["t2"]
    assert second.next_page_token == ""
    # New events after the last page show up when paging on from the last token.
    await stub.Publish(pb.PublishRequest(events=[ce(id="t3")]))
    third = await stub.ListEvents(pb.ListEventsRequest(page_size=2, page_token=first.next_page_token))
    assert [e.event.id for e in third.events] == ["t2", "t3"]


async def test_get_event_by_event_id_and_by_source_and_id(client: EventBusClient, clock: ManualClock) -> None:
    [result] = await client.publish(event(id="g1", subject="sub", data={"k": "v"}))
    by_id = await client.get_event(result.event_id)
    by_ref = await client.get_event(source="/shop", id="g1")
    assert by_id == by_ref
    assert (by_id.event_id, by_id.seq, by_id.received_at) == (result.event_id, result.seq, clock.now())
    assert by_id.event.subject == "sub"
    assert by_id.event.json_data() == {"k": "v"}


async def test_get_event_not_found_and_invalid(client: EventBusClient, stub: eventbus_pb2_grpc.EventBusStub) -> None:
    await client.publish(event(id="exists"))
    with pytest.raises(NotFoundError):
        await client.get_event("evt_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(NotFoundError):
        await client.get_event(source="/shop", id="missing")
    with pytest.raises(NotFoundError):
        await client.get_event(source="/elsewhere", id="exists")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEvent(pb.GetEventRequest(event_id="evt_nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEvent(pb.GetEventRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["event_id"]
    with pytest.raises(InvalidArgumentError):
        await client.get_event(source="/shop")  # id missing
