"""Helpers shared by the store contract suite: small events, gRPC-kind specs, and the moves every test makes.

Everything here speaks the `Store` Protocol only, so the suite runs unchanged on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from eventbus.clock import ManualClock
from eventbus.model import Event
from eventbus.store.base import (
    DEFAULT_MAX_PENDING_AGE,
    AppendOutcome,
    LeasedDelivery,
    Settle,
    Settlement,
    StartPosition,
    Store,
    Subscription,
    SubscriptionSpec,
)

DEDUP_WINDOW = timedelta(hours=24)
LEASE_FOR = timedelta(seconds=30)
SHORT_SCHEDULE = (timedelta(seconds=10),)  # two attempts in all
AMOUNT_AT_LEAST_10 = '{"data.amount":{"$gte":10}}'


def order(
    event_id: str, type: str = "order.paid", *, amount: int = 100, source: str = "/shop", subject: str | None = None
) -> Event:
    """An order event with JSON data `{"amount": amount}`."""
    return Event.create(type=type, source=source, id=event_id, subject=subject, data={"amount": amount})


def group_spec(
    name: str | None = "billing",
    patterns: tuple[str, ...] = ("order.*",),
    *,
    filter_json: str | None = None,
    retry_schedule: tuple[timedelta, ...] = SHORT_SCHEDULE,
    max_pending_age: timedelta = DEFAULT_MAX_PENDING_AGE,
    ephemeral: bool = False,
    kind: str = "grpc",
) -> SubscriptionSpec:
    """A consumer-group subscription (kind `grpc`)."""
    return SubscriptionSpec(
        kind=kind,
        name=name,
        patterns=patterns,
        filter_json=filter_json,
        retry_schedule=retry_schedule,
        max_pending_age=max_pending_age,
        ephemeral=ephemeral,
    )


async def append(
    store: Store,
    clock: ManualClock,
    *events: Event,
    not_before: datetime | None = None,
    dedup_window: timedelta = DEDUP_WINDOW,
) -> list[AppendOutcome]:
    return await store.append(events, now=clock.now(), not_before=not_before, dedup_window=dedup_window)


async def subscribe(
    store: Store,
    clock: ManualClock,
    spec: SubscriptionSpec | None = None,
    start: StartPosition | None = None,
) -> Subscription:
    """Create a new subscription (asserting it is new)."""
    subscription, created = await store.create_subscription(
        spec or group_spec(), start=start or StartPosition(), now=clock.now()
    )
    assert created
    return subscription


async def lease(
    store: Store, clock: ManualClock, subscription_id: str, *, limit: int = 100, lease_for: timedelta = LEASE_FOR
) -> list[LeasedDelivery]:
    return await store.lease_deliveries(subscription_id, limit=limit, lease_for=lease_for, now=clock.now())


async def run_backfill(store: Store, clock: ManualClock, subscription_id: str, *, limit: int = 2) -> int:
    """Call `backfill` until it says done; returns how many calls that took."""
    calls = 1
    while await store.backfill(subscription_id, now=clock.now(), limit=limit):
        calls += 1
        assert calls < 1000, "backfill never finished"
    return calls


def seqs(leased: Sequence[LeasedDelivery]) -> list[int]:
    return [d.event.seq for d in leased]


def ok(delivery: LeasedDelivery) -> Settle:
    return Settle(delivery.delivery_id, delivery.lease_token, Settlement.SUCCEEDED)


async def settle_ok(store: Store, clock: ManualClock, leased: Sequence[LeasedDelivery]) -> list[bool]:
    return await store.settle_deliveries([ok(d) for d in leased], now=clock.now())
