"""Background upkeep: idle groups expire, ephemeral leftovers go, deleted rows are purged, retention prunes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from eventbus.bus.service import BusSettings
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import NotFoundError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from eventbus.store.base import StartPosition, SubscriptionSpec
from tests.conftest import fast_settings


@pytest.fixture
def bus_settings() -> BusSettings:
    return fast_settings(retention=timedelta(days=1))


def order(n: int) -> Event:
    return Event.create(type="order.paid", source="/shop", id=f"o-{n}", data={"n": n})


async def streams_closed(server: EventBusServer) -> None:
    """The server learns of a closed stream asynchronously: wait for it (bounded), not for a fixed time."""
    for _ in range(500):
        if not server.bus.sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server still holds a stream")


async def test_idle_durable_group_expires_after_seven_days(
    server: EventBusServer, client: EventBusClient, clock: ManualClock
) -> None:
    async with client.subscribe("idle", ["order.*"]):
        pass
    await streams_closed(server)
    clock.advance(timedelta(days=6))
    await server.bus.run_upkeep()
    assert (await client.get_group("idle")).name == "idle"
    clock.advance(timedelta(days=1, seconds=1))
    await server.bus.run_upkeep()
    with pytest.raises(NotFoundError):
        await client.get_group("idle")


async def test_a_group_with_a_live_stream_never_expires(
    server: EventBusServer, client: EventBusClient, clock: ManualClock
) -> None:
    async with client.subscribe("live", ["order.*"]):
        for _ in range(3):
            clock.advance(timedelta(days=5))
            await server.bus.run_upkeep()  # heartbeats the groups this process serves
        assert (await client.get_group("live")).active_streams == 1


async def test_retention_prunes_finished_work_but_never_pending(
    server: EventBusServer, client: EventBusClient, clock: ManualClock
) -> None:
    async with client.subscribe("keep", ["order.*"]) as subscription:
        await client.publish([order(1), order(2)])
        first = await asyncio.wait_for(anext(subscription), 5)
        await first.ack()
        second = await asyncio.wait_for(anext(subscription), 5)
        await second.retry(timedelta(days=2))  # pending (no stream leases it) past the retention window
    await streams_closed(server)
    clock.advance(timedelta(days=2))  # past the 1-day retention of this module, the group not yet idle
    await server.bus.run_upkeep()
    events, _ = await client.list_events()
    assert [e.event.id for e in events] == [second.event.event.id]
    group = await client.get_group("keep")
    assert (group.succeeded, group.pending) == (0, 1)


async def test_deleted_group_rows_are_purged(server: EventBusServer, client: EventBusClient) -> None:
    async with client.subscribe("gone", ["order.*"]):
        await client.publish([order(n) for n in range(10)])
    assert (await client.get_group("gone")).lag == 10
    await client.delete_group("gone")
    await server.bus.run_upkeep()
    remaining = await server.store._read(  # type: ignore[attr-defined]
        lambda c: c.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    )
    assert remaining == 0


async def test_upkeep_finishes_a_backfill_nobody_kicked(server: EventBusServer, clock: ManualClock) -> None:
    """A backfill started by a process that died is found by the upkeep of any other: the group's backlog, and the
    events held behind it, are not stuck until someone joins or seeks again."""
    await server.bus.publish([order(1), order(2)])
    spec = SubscriptionSpec(kind="grpc", name="orphaned", patterns=("order.*",))
    subscription, _ = await server.store.create_subscription(spec, start=StartPosition("earliest"), now=clock.now())
    assert await server.store.pending_backfills() == [subscription.id]  # nobody kicked this process's backfill task
    await server.bus.run_upkeep()
    for _ in range(500):
        if not await server.store.pending_backfills():
            break
        await asyncio.sleep(0.01)
    assert await server.store.pending_backfills() == []
    stats = await server.store.subscription_stats(subscription.id)
    assert stats.pending == 2
