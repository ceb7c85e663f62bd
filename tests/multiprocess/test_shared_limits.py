"""The PostgreSQL store's grants of sends (`acquire_send_slots`, pg_limits): what the dispatchers of every process
ask before each send. Two stores on one schema stand for two processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from eventbus.bus.health import system_events
from eventbus.clock import ManualClock
from eventbus.store.base import LeasedDelivery, StartPosition, SubscriptionState
from eventbus.store.limits import SendGrant, SendLease, SharedSendLimits
from eventbus.store.postgres import PostgresStore
from eventbus.store.records import HealthPolicy
from tests.multiprocess.conftest import PG_DATABASE, PG_SERVER, drop_schema, make_schema
from tests.store.support import append, lease, order
from tests.store.test_contract_attempts import endpoint_spec, failed, succeeded

SENDING_FOR = timedelta(seconds=30)


@pytest.fixture
async def stores() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores (two pools, as two processes have) on one fresh schema."""
    schema = f"mp_{uuid.uuid4().hex}"
    try:
        await make_schema(schema)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__}: {exc})")
    opened = [PostgresStore(f"{PG_SERVER}/{PG_DATABASE}?schema={schema}&pool=4") for _ in range(2)]
    try:
        for store in opened:
            await store.open()
        yield opened[0], opened[1]
    finally:
        for store in opened:
            await store.close()
        await drop_schema(schema)


async def backlog(store: PostgresStore, clock: ManualClock, count: int) -> str:
    subscription, _ = await store.create_subscription(endpoint_spec(), start=StartPosition(), now=clock.now())
    await append(store, clock, *(order(f"o{n}") for n in range(count)))
    return subscription.id


def asks(leased: list[LeasedDelivery]) -> list[SendLease]:
    return [SendLease(d.delivery_id, d.lease_token, d.probe or d.manual) for d in leased]


async def grant(
    store: PostgresStore,
    clock: ManualClock,
    subscription_id: str,
    leased: list[LeasedDelivery],
    *,
    concurrency: int = 10,
    rate: float | None = None,
) -> SendGrant:
    return await store.acquire_send_slots(
        subscription_id,
        asks(leased),
        max_concurrency=concurrency,
        rate=rate,
        sending_for=SENDING_FOR,
        now=clock.now(),
    )


async def test_the_postgres_store_offers_shared_limits(stores: tuple[PostgresStore, PostgresStore]) -> None:
    assert isinstance(stores[0], SharedSendLimits)  # the dispatcher asks it before every send


async def test_sends_in_flight_count_against_the_concurrency_leases_do_not(
    stores: tuple[PostgresStore, PostgresStore], clock: ManualClock
) -> None:
    one, two = stores
    subscription_id = await backlog(one, clock, 8)
    mine = await lease(one, clock, subscription_id, limit=4)
    theirs = await lease(two, clock, subscription_id, limit=4)  # leased ahead: they hold no slot
    assert (await grant(one, clock, subscription_id, mine[:3], concurrency=2)).granted == 2
    assert (await grant(two, clock, subscription_id, theirs, concurrency=2)).granted == 0
    # A recorded attempt frees its slot: the other process gets it.
    await one.record_attempt(succeeded(mine[0], clock), policy=HealthPolicy(), now=clock.now(), system_events=None)
    assert (await grant(two, clock, subscription_id, theirs, concurrency=2)).granted == 1
    # So does a released lease, and a lost one (leased again after it ran out); a process that died mid-send
    # holds its slot until `sending_for` has passed.
    await one.release_leases([(mine[1].delivery_id, mine[1].lease_token)], now=clock.now())
    assert (await grant(two, clock, subscription_id, theirs[1:], concurrency=2)).granted == 1
    assert (await grant(one, clock, subscription_id, mine[2:], concurrency=2)).granted == 0
    clock.advance(SENDING_FOR)
    assert (await grant(one, clock, subscription_id, mine[2:], concurrency=2)).granted == 2


async def test_two_processes_asking_at_once_share_the_slots(
    stores: tuple[PostgresStore, PostgresStore], clock: ManualClock
) -> None:
    one, two = stores
    subscription_id = await backlog(one, clock, 12)
    mine = await lease(one, clock, subscription_id, limit=6)
    theirs = await lease(two, clock, subscription_id, limit=6)
    grants = await asyncio.gather(
        *(
            grant(store, clock, subscription_id, leased[n : n + 1], concurrency=3)
            for n in range(6)
            for store, leased in ((one, mine), (two, theirs))
        )
    )
    assert sum(g.granted for g in grants) == 3


async def test_a_shared_token_bucket_limits_the_rate(
    stores: tuple[PostgresStore, PostgresStore], clock: ManualClock
) -> None:
    one, two = stores
    subscription_id = await backlog(one, clock, 10)
    mine = await lease(one, clock, subscription_id, limit=5)
    theirs = await lease(two, clock, subscription_id, limit=5)
    # 2/s with a burst of 2, whichever process sends.
    assert (await grant(one, clock, subscription_id, mine[:1], rate=2)).granted == 1
    empty = await grant(two, clock, subscription_id, theirs, rate=2)
    assert empty.granted == 1
    empty = await grant(two, clock, subscription_id, theirs[1:], rate=2)
    assert (empty.granted, empty.retry_at) == (0, clock.now() + timedelta(seconds=0.5))
    clock.advance(timedelta(seconds=0.5))
    assert (await grant(one, clock, subscription_id, mine[1:], rate=2)).granted == 1
    clock.advance(timedelta(hours=1))  # a long quiet time refills the burst, no more
    assert (await grant(two, clock, subscription_id, theirs[1:], rate=2)).granted == 2


async def test_an_open_circuit_lets_only_a_probe_or_a_resend_through(
    stores: tuple[PostgresStore, PostgresStore], clock: ManualClock
) -> None:
    one, two = stores
    subscription_id = await backlog(one, clock, 3)
    leased = await lease(one, clock, subscription_id, limit=3)
    opens = HealthPolicy(failure_threshold=1)
    await one.record_attempt(failed(leased[0], clock), policy=opens, now=clock.now(), system_events=system_events)
    # Leased before it opened: held now, whichever process asks, and the pump is told to look again.
    refused = await grant(two, clock, subscription_id, leased[1:])
    assert (refused.granted, refused.held) == (0, True)
    probe = SendLease(leased[1].delivery_id, leased[1].lease_token, through_open_circuit=True)
    allowed = await two.acquire_send_slots(
        subscription_id,
        [probe, *asks(leased[2:])],
        max_concurrency=10,
        rate=None,
        sending_for=SENDING_FOR,
        now=clock.now(),
    )
    assert (allowed.granted, allowed.held) == (1, True)


async def test_a_paused_or_deleted_subscription_gets_no_send(
    stores: tuple[PostgresStore, PostgresStore], clock: ManualClock
) -> None:
    one, _ = stores
    subscription_id = await backlog(one, clock, 2)
    leased = await lease(one, clock, subscription_id, limit=2)
    await one.set_subscription_state(subscription_id, SubscriptionState.PAUSED, reason=None, now=clock.now())
    assert await grant(one, clock, subscription_id, leased) == SendGrant(0, held=True)
    await one.delete_subscription(subscription_id, now=clock.now())
    assert await grant(one, clock, subscription_id, leased) == SendGrant(0, held=True)
