"""A rate a plugin kind shares between subscriptions by key (its `RateLimit`, e.g. one RD Station account): one
token bucket per key, at the lowest rate among the active subscriptions naming it, never refilled by a change.

On PostgreSQL the store grants each send against a bucket in the database (`acquire_send_slots` with `shared`), so
the bound holds for every process together; SQLite has one process per file, and the dispatcher's own buckets
(`SendLimits`) are the limit. The same scenarios run against whichever of the two the backend uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import Protocol, cast

import pytest

from eventbus.bus.kinds import DeliveryKind
from eventbus.bus.ratelimit import SendLimits, shared_rate
from eventbus.clock import ManualClock
from eventbus.store import open_store
from eventbus.store.base import LeasedDelivery, StartPosition, Store, Subscription, SubscriptionState
from eventbus.store.limits import SendLease, SharedSendLimits
from tests.conftest import TEST_STORE, store_url
from tests.store.support import append, lease, order
from tests.store.test_contract_attempts import endpoint_spec

BACKLOG = 20  # deliveries per subscription: more than any scenario sends


class AccountKind:
    """The part of a plugin kind the limits read: its name, and the (account, rate) its options share."""

    name = "accounts"

    def shared_rate_limit(self, subscription: Subscription) -> tuple[str, float] | None:
        rate = subscription.options.get("rate")
        return (str(subscription.options["account"]), float(str(rate))) if rate is not None else None


KIND = cast(DeliveryKind, AccountKind())


class Limits(Protocol):
    async def take(self, subscription: Subscription, want: int) -> int:
        """Sends of `subscription` allowed now, up to `want` (their tokens taken)."""
        ...

    def stopped(self, subscription_id: str) -> None:
        """The subscription was paused or deleted (what the dispatcher tells its own buckets)."""
        ...


class StoreGrants:
    """The store's grant, as the dispatcher asks it before each send (PostgreSQL)."""

    def __init__(self, store: Store, clock: ManualClock) -> None:
        assert isinstance(store, SharedSendLimits)
        self.store: Store = store
        self.grants: SharedSendLimits = store
        self.clock = clock
        self.queues: dict[str, deque[LeasedDelivery]] = {}

    async def take(self, subscription: Subscription, want: int) -> int:
        queue = self.queues.get(subscription.id)
        if queue is None:
            leased = await lease(self.store, self.clock, subscription.id, lease_for=timedelta(hours=1))
            queue = self.queues[subscription.id] = deque(leased)
        if not want:
            return 0
        asked = [SendLease(d.delivery_id, d.lease_token) for d in list(queue)[:want]]
        assert len(asked) == want, "the backlog ran out"
        grant = await self.grants.acquire_send_slots(
            subscription.id,
            asked,
            max_concurrency=1000,  # only the rate limits here
            rate=None,
            sending_for=timedelta(hours=1),
            now=self.clock.now(),
            shared=shared_rate(subscription, KIND),
        )
        for _ in range(grant.granted):
            queue.popleft()
        return grant.granted

    def stopped(self, subscription_id: str) -> None:
        pass  # the store reads the subscription's state itself


class ProcessBuckets:
    """The dispatcher's own buckets (SQLite: one process per file, so they are the whole limit)."""

    def __init__(self, clock: ManualClock) -> None:
        self.limits, self.clock = SendLimits(), clock

    async def take(self, subscription: Subscription, want: int) -> int:
        now = self.clock.now()
        buckets = self.limits.of(subscription, KIND, now)
        allowed = min([want, *(b.available(now) for b in buckets)])
        for bucket in buckets:
            bucket.take(allowed)
        return allowed

    def stopped(self, subscription_id: str) -> None:
        self.limits.forget(subscription_id)


@pytest.fixture
def limits(store: Store, clock: ManualClock) -> Limits:
    return StoreGrants(store, clock) if isinstance(store, SharedSendLimits) else ProcessBuckets(clock)


async def subscriptions(store: Store, clock: ManualClock, *options: dict[str, object]) -> list[Subscription]:
    """Subscriptions of the accounts kind with these options, each with a backlog of `BACKLOG` deliveries."""
    made = []
    for option in options:
        subscription, _ = await store.create_subscription(
            endpoint_spec(kind=AccountKind.name, options=option), start=StartPosition(), now=clock.now()
        )
        made.append(subscription)
    await append(store, clock, *(order(f"o{n}") for n in range(BACKLOG)))
    return made


async def fresh(store: Store, subscription: Subscription) -> Subscription:
    """The subscription as the dispatcher reads it again after a change."""
    found = await store.get_subscription(subscription.id)
    assert found is not None
    return found


def test_a_store_many_processes_share_grants_the_shared_rates(store: Store) -> None:
    assert isinstance(store, SharedSendLimits) is (TEST_STORE in ("postgresql", "postgres"))


async def test_subscriptions_naming_one_key_share_one_bucket_at_the_lowest_rate(
    store: Store, clock: ManualClock, limits: Limits
) -> None:
    fast, slow, other = await subscriptions(
        store,
        clock,
        {"account": "acme", "rate": 2},
        {"account": "acme", "rate": 1},
        {"account": "globex", "rate": 1},
    )
    assert await limits.take(slow, 1) == 1  # the bucket of 1/s (burst 1) is empty now, for both
    assert await limits.take(fast, 5) == 0
    clock.advance(timedelta(seconds=1))
    assert await limits.take(fast, 5) == 1  # 1/s, the lower rate, not its own 2/s
    clock.advance(timedelta(seconds=10))
    assert await limits.take(fast, 5) == 1  # a long quiet time refills the lower burst, no more
    assert await limits.take(slow, 1) == 0
    assert await limits.take(other, 5) == 1  # another key: a bucket of its own


async def test_a_change_of_the_lowest_rate_never_refills_the_bucket(
    store: Store, clock: ManualClock, limits: Limits
) -> None:
    fast, slow = await subscriptions(store, clock, {"account": "acme", "rate": 5}, {"account": "acme", "rate": 1})
    assert await limits.take(fast, 10) == 5  # its burst, alone on the key
    assert await limits.take(slow, 1) == 0  # the rate went down to 1/s: what was spent stays spent
    clock.advance(timedelta(seconds=1))
    assert await limits.take(slow, 3) == 1
    # The slow one paused: its rate no longer holds the key back, and going up to 5/s gives back nothing spent.
    await store.set_subscription_state(slow.id, SubscriptionState.PAUSED, reason=None, now=clock.now())
    limits.stopped(slow.id)
    assert await limits.take(fast, 10) == 0
    clock.advance(timedelta(seconds=0.4))
    assert await limits.take(fast, 10) == 2  # 5/s from the change on


async def test_a_subscription_moved_to_another_key_unlimited_or_deleted_no_longer_holds_the_key_back(
    store: Store, clock: ManualClock, limits: Limits
) -> None:
    fast, moved, dropped, gone = await subscriptions(
        store,
        clock,
        {"account": "acme", "rate": 5},
        {"account": "acme", "rate": 1},
        {"account": "acme", "rate": 1},
        {"account": "acme", "rate": 2},
    )
    assert await limits.take(gone, 1) == 1
    assert await limits.take(moved, 1) == 1  # down to 1/s: the bucket is empty
    assert await limits.take(dropped, 1) == 0
    clock.advance(timedelta(milliseconds=10))  # a change is a new `updated_at`
    await store.update_subscription(moved.id, {"options": {"account": "globex", "rate": 1}}, now=clock.now())
    await store.update_subscription(dropped.id, {"options": {"account": "acme"}}, now=clock.now())
    moved, dropped = await fresh(store, moved), await fresh(store, dropped)
    assert await limits.take(moved, 5) == 1  # its new key's bucket, full
    assert await limits.take(dropped, 3) == 3  # no shared rate any more
    clock.advance(timedelta(seconds=1))
    assert await limits.take(fast, 10) == 1  # refilled at the old 1/s, its burst of 1
    await store.delete_subscription(gone.id, now=clock.now())
    limits.stopped(gone.id)
    assert await limits.take(fast, 10) == 0
    clock.advance(timedelta(seconds=1))
    # 5/s, its own rate: neither the moved nor the unlimited one (1/s before) nor the deleted one (2/s) holds it.
    assert await limits.take(fast, 10) == 5


async def test_grants_of_two_processes_at_once_share_one_bucket(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    if not isinstance(store, SharedSendLimits):
        pytest.skip("SQLite: one process per file (the dispatcher's buckets are the limit)")
    made = await subscriptions(store, clock, *({"account": "acme", "rate": 3} for _ in range(6)))
    other = open_store(store_url(tmp_path))  # a second pool on the same schema: another process
    await other.open()
    try:
        mine, theirs = StoreGrants(store, clock), StoreGrants(other, clock)
        asking = [(mine if n % 2 else theirs, subscription) for n, subscription in enumerate(made)]
        for grants, subscription in asking:
            assert await grants.take(subscription, 0) == 0  # leased, nothing asked yet
        granted = await asyncio.gather(*(grants.take(subscription, 2) for grants, subscription in asking))
        assert sum(granted) == 3  # the burst of 3/s, once, whoever asks
    finally:
        await other.close()
