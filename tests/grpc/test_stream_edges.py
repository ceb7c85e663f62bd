"""Edges of a Subscribe stream found in review: deleted groups, odd durations, the store going unhealthy."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2_grpc
from eventbus.v1 import eventbus_pb2 as pb
from tests.conftest import TEST_STORE

from .helpers import WAIT, RawStream, ce


async def test_deleting_a_group_ends_its_streams_with_not_found(
    stub: eventbus_pb2_grpc.EventBusStub, admin_stub: admin_pb2_grpc.AdminStub
) -> None:
    stream = RawStream(stub)
    await stream.join(group="doomed")
    await stub.Publish(pb.PublishRequest(events=[ce(id="d-1")]))
    await stream.delivery()
    await admin_stub.DeleteGroup(admin_pb2.DeleteGroupRequest(name="doomed"))
    error = await asyncio.wait_for(stream.failure(), WAIT)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "deleted" in error.details()


async def test_a_negative_extend_is_refused_in_ack_results(stub: eventbus_pb2_grpc.EventBusStub) -> None:
    stream = RawStream(stub)
    await stream.join(group="extend-negative")
    await stub.Publish(pb.PublishRequest(events=[ce(id="x-1")]))
    delivery = await stream.delivery()
    [result] = await stream.extend([delivery.delivery_id], by=timedelta(seconds=-1))
    assert not result.ok
    assert "negative" in result.reason
    assert (await stream.ack(delivery.delivery_id)).ok  # the stream is still open and still holds it


async def test_a_huge_retry_after_is_capped_not_fatal(
    stub: eventbus_pb2_grpc.EventBusStub, client: EventBusClient, clock: ManualClock
) -> None:
    stream = RawStream(stub)
    await stream.join(group="huge-retry")
    await stub.Publish(pb.PublishRequest(events=[ce(id="h-1")]))
    delivery = await stream.delivery()
    result = await stream.ack(delivery.delivery_id, pb.Ack.RETRY, retry_after=timedelta(days=3650000))
    assert result.ok
    group = await client.get_group("huge-retry")
    assert (group.pending, group.dead) == (1, 0)
    clock.advance(timedelta(days=3, seconds=1))  # capped at the max pending age: due, and then too old
    await client.publish(Event.create(type="order.paid", source="/marker", id="m"))
    marker = await stream.delivery()
    assert marker.event.event.source == "/marker"
    assert (await client.get_group("huge-retry")).dead == 1


@pytest.mark.skipif(
    TEST_STORE != "sqlite", reason="breaks SQLite's writer thread on purpose; PostgreSQL: issue 7's failure tests"
)
async def test_readyz_reports_a_store_that_cannot_write(
    server: EventBusServer, client: EventBusClient, http_url: str
) -> None:
    store = server.store
    # The janitor's first round (at start-up) writes too, and a write that succeeds rightly clears the failure:
    # stop the background work so only this test's writes reach the store.
    await server.bus.stop()
    # Fill the file's page budget so that writes fail as on a full disk.
    await store._writer.submit(  # type: ignore[attr-defined]
        lambda conn: conn.execute("PRAGMA max_page_count = " + str(conn.execute("PRAGMA page_count").fetchone()[0]))
    )
    big = [Event.create(type="order.paid", source="/full", id=f"f-{i}", data=b"x" * 500_000) for i in range(4)]
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), publish_retries=0) as impatient:
        with pytest.raises(UnavailableError, match="full"):
            await impatient.publish(big)
        events, _ = await impatient.list_events(source="/full")
        assert events == []  # nothing of the failed call was stored
    async with aiohttp.ClientSession() as http, http.get(f"{http_url}/readyz") as response:
        assert response.status == 503
    await store._writer.submit(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))  # type: ignore[attr-defined]
    await client.publish(Event.create(type="order.paid", source="/full", id="after"))
    async with aiohttp.ClientSession() as http, http.get(f"{http_url}/readyz") as response:
        assert response.status == 200
