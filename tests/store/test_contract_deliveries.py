"""Store contract, deliveries: leases and fencing, extend/release, retry and dead letters, exhaustion and
expiry, due times and stats, retention.

Every test speaks the `Store` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from eventbus.clock import ManualClock
from eventbus.store.base import (
    DeadReason,
    EventQuery,
    Settle,
    Settlement,
    Store,
    Subscription,
    SubscriptionStats,
)
from tests.store.support import LEASE_FOR, append, group_spec, lease, ok, order, seqs, settle_ok, subscribe


async def _subscription_with_events(
    store: Store, clock: ManualClock, count: int, *, max_pending_age: timedelta = timedelta(days=3)
) -> tuple[Subscription, list[int]]:
    subscription = await subscribe(store, clock, group_spec(max_pending_age=max_pending_age))
    outcomes = await append(store, clock, *(order(f"o-{n}") for n in range(count)))
    return subscription, [o.seq for o in outcomes]


def _counts(stats: SubscriptionStats) -> tuple[int, int, int, int]:
    return (stats.pending, stats.leased, stats.succeeded, stats.dead)


# -- leasing -----------------------------------------------------------------------------------------------


async def test_lease_respects_limit_and_stamps_the_first_attempt(store: Store, clock: ManualClock) -> None:
    subscription, all_seqs = await _subscription_with_events(store, clock, 5)

    first = await lease(store, clock, subscription.id, limit=3)
    second = await lease(store, clock, subscription.id, limit=3)

    assert seqs(first) == all_seqs[:3]  # oldest first
    assert seqs(second) == all_seqs[3:]
    assert await lease(store, clock, subscription.id, limit=3) == []
    for delivery in first + second:
        assert delivery.attempt == 1
        assert delivery.first_attempt_at == clock.now()
        assert delivery.lease_expires_at == clock.now() + LEASE_FOR
        assert delivery.subscription_id == subscription.id
    assert len({d.delivery_id for d in first + second}) == 5
    assert len({d.lease_token for d in first + second}) == 5


async def test_a_lease_hides_the_delivery_until_it_runs_out(store: Store, clock: ManualClock) -> None:
    subscription, [seq] = await _subscription_with_events(store, clock, 1)
    started = clock.now()
    (held,) = await lease(store, clock, subscription.id)

    clock.advance(LEASE_FOR - timedelta(seconds=1))
    assert await lease(store, clock, subscription.id) == []
    clock.advance(2)
    (again,) = await lease(store, clock, subscription.id)

    assert again.delivery_id == held.delivery_id
    assert again.event.seq == seq
    assert again.attempt == 2
    assert again.lease_token != held.lease_token
    assert again.first_attempt_at == started  # the first attempt, not this one
    assert again.lease_expires_at == clock.now() + LEASE_FOR


async def test_a_stale_lease_token_is_fenced_off(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 1)
    (held,) = await lease(store, clock, subscription.id)
    clock.advance(LEASE_FOR + timedelta(seconds=1))
    (current,) = await lease(store, clock, subscription.id)

    assert await store.settle_deliveries([ok(held)], now=clock.now()) == [False]
    assert await store.extend_leases([(held.delivery_id, held.lease_token)], until=clock.now()) == [False]
    assert await store.release_leases([(held.delivery_id, held.lease_token)], now=clock.now()) == 0
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 1, 0, 0)

    assert await store.settle_deliveries([ok(current)], now=clock.now()) == [True]
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 0, 1, 0)


async def test_settle_answers_each_item_and_a_settled_lease_is_gone(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 2)
    a, b = await lease(store, clock, subscription.id)
    unknown = Settle("dlv_01J00000000000000000000000", 1, Settlement.SUCCEEDED)
    wrong = Settle(b.delivery_id, b.lease_token + 1, Settlement.SUCCEEDED)

    assert await store.settle_deliveries([ok(a), unknown, wrong, ok(b)], now=clock.now()) == [True, False, False, True]
    assert await store.settle_deliveries([ok(a)], now=clock.now()) == [False]  # already settled
    assert await store.settle_deliveries([], now=clock.now()) == []
    clock.advance(LEASE_FOR * 10)
    assert await lease(store, clock, subscription.id) == []  # succeeded deliveries never come back


async def test_concurrent_leases_never_hand_out_a_delivery_twice(store: Store, clock: ManualClock) -> None:
    subscription, all_seqs = await _subscription_with_events(store, clock, 40)
    batches = await asyncio.gather(*(lease(store, clock, subscription.id, limit=15) for _ in range(4)))
    leased = [d for batch in batches for d in batch]
    assert sorted(seqs(leased)) == all_seqs
    assert len({d.delivery_id for d in leased}) == 40


async def test_leases_are_per_subscription(store: Store, clock: ManualClock) -> None:
    a = await subscribe(store, clock, group_spec("a"))
    b = await subscribe(store, clock, group_spec("b"))
    (outcome,) = await append(store, clock, order("o-1"))
    (from_a,) = await lease(store, clock, a.id)
    (from_b,) = await lease(store, clock, b.id)
    assert from_a.event.seq == from_b.event.seq == outcome.seq
    assert from_a.delivery_id != from_b.delivery_id
    assert await store.settle_deliveries([ok(from_a)], now=clock.now()) == [True]
    assert _counts(await store.subscription_stats(b.id)) == (0, 1, 0, 0)


# -- extend and release ------------------------------------------------------------------------------------


async def test_extend_leases_postpones_expiry(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 2)
    held, other = await lease(store, clock, subscription.id)
    until = clock.now() + timedelta(minutes=2)

    wrong_token = (other.delivery_id, other.lease_token + 1)
    assert await store.extend_leases([(held.delivery_id, held.lease_token), wrong_token], until=until) == [True, False]
    assert await store.extend_leases([], until=until) == []

    clock.advance(LEASE_FOR + timedelta(seconds=1))  # past the original lease
    assert seqs(await lease(store, clock, subscription.id)) == [other.event.seq]  # only the unextended one
    clock.advance(until - clock.now() - timedelta(seconds=1))
    assert await lease(store, clock, subscription.id) == []
    clock.advance(1)
    (again,) = await lease(store, clock, subscription.id)
    assert again.delivery_id == held.delivery_id and again.attempt == 2


async def test_extended_lease_still_settles_with_its_token(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 1)
    (held,) = await lease(store, clock, subscription.id)
    await store.extend_leases([(held.delivery_id, held.lease_token)], until=clock.now() + timedelta(minutes=5))
    clock.advance(timedelta(minutes=4))
    assert await store.settle_deliveries([ok(held)], now=clock.now()) == [True]


async def test_release_leases_makes_deliveries_due_at_once(store: Store, clock: ManualClock) -> None:
    subscription, all_seqs = await _subscription_with_events(store, clock, 3)
    a, b, c = await lease(store, clock, subscription.id)
    waiter = store.wakeups.register(subscription.id)

    released = await store.release_leases(
        [(a.delivery_id, a.lease_token), (b.delivery_id, b.lease_token + 1)], now=clock.now()
    )

    assert released == 1
    assert waiter.is_set()
    assert await store.release_leases([], now=clock.now()) == 0
    assert await store.next_due_at(subscription.id) == clock.now()
    assert _counts(await store.subscription_stats(subscription.id)) == (1, 2, 0, 0)
    (again,) = await lease(store, clock, subscription.id)  # same instant: no waiting for the lease to run out
    assert again.delivery_id == a.delivery_id
    assert again.lease_token != a.lease_token
    assert await store.settle_deliveries([ok(a)], now=clock.now()) == [False]
    assert await store.settle_deliveries([ok(again), ok(b), ok(c)], now=clock.now()) == [True] * 3
    assert sorted([again.event.seq, b.event.seq, c.event.seq]) == all_seqs


# -- retry and dead letters --------------------------------------------------------------------------------


async def test_retry_is_not_due_before_retry_at(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 1)
    started = clock.now()
    (held,) = await lease(store, clock, subscription.id)
    retry_at = clock.now() + timedelta(minutes=5)
    waiter = store.wakeups.register(subscription.id)

    retry = Settle(held.delivery_id, held.lease_token, Settlement.RETRY, retry_at=retry_at, error="HTTP 503")
    assert await store.settle_deliveries([retry], now=clock.now()) == [True]

    assert waiter.is_set()
    assert await store.next_due_at(subscription.id) == retry_at
    assert _counts(await store.subscription_stats(subscription.id)) == (1, 0, 0, 0)
    assert await lease(store, clock, subscription.id) == []
    clock.advance(timedelta(minutes=5) - timedelta(seconds=1))
    assert await lease(store, clock, subscription.id) == []
    clock.advance(1)
    (again,) = await lease(store, clock, subscription.id)
    assert again.delivery_id == held.delivery_id
    assert again.attempt == 2
    assert again.first_attempt_at == started
    assert await store.settle_deliveries([ok(held)], now=clock.now()) == [False]  # the retry ended that lease


async def test_dead_settlement_is_final(store: Store, clock: ManualClock) -> None:
    subscription, _ = await _subscription_with_events(store, clock, 2)
    doomed, fine = await lease(store, clock, subscription.id)

    dead = Settle(doomed.delivery_id, doomed.lease_token, Settlement.DEAD, reason=DeadReason.REJECTED, error="422")
    assert await store.settle_deliveries([dead, ok(fine)], now=clock.now()) == [True, True]

    assert _counts(await store.subscription_stats(subscription.id)) == (0, 0, 1, 1)
    assert await store.next_due_at(subscription.id) is None
    clock.advance(timedelta(days=1))
    assert await lease(store, clock, subscription.id) == []


async def test_exhausted_after_max_attempts_of_expired_leases(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec(retry_schedule=(timedelta(seconds=1),)))
    assert subscription.max_attempts == 2
    await append(store, clock, order("o-1"))

    for attempt in range(1, subscription.max_attempts + 1):
        (held,) = await lease(store, clock, subscription.id)
        assert held.attempt == attempt
        clock.advance(LEASE_FOR + timedelta(seconds=1))  # the worker vanished: the lease runs out

    assert await lease(store, clock, subscription.id) == []
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 0, 0, 1)
    assert await store.next_due_at(subscription.id) is None


async def test_exhausted_after_max_attempts_of_retries(store: Store, clock: ManualClock) -> None:
    schedule = (timedelta(seconds=1), timedelta(seconds=2))
    subscription = await subscribe(store, clock, group_spec(retry_schedule=schedule))
    await append(store, clock, order("o-1"))

    for attempt in range(1, subscription.max_attempts + 1):
        (held,) = await lease(store, clock, subscription.id)
        assert held.attempt == attempt
        retry = Settle(
            held.delivery_id, held.lease_token, Settlement.RETRY, retry_at=clock.now() + timedelta(seconds=5)
        )
        assert await store.settle_deliveries([retry], now=clock.now()) == [True]
        clock.advance(5)

    assert await lease(store, clock, subscription.id) == []
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 0, 0, 1)


async def test_exhausted_deliveries_do_not_block_the_others(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec(retry_schedule=()))  # one attempt only
    (first,) = await append(store, clock, order("o-1"))
    await lease(store, clock, subscription.id)
    clock.advance(LEASE_FOR + timedelta(seconds=1))
    (second,) = await append(store, clock, order("o-2"))

    leased = await lease(store, clock, subscription.id)
    leased += await lease(store, clock, subscription.id)  # a backend may spend one call burying the first

    assert seqs(leased) == [second.seq]
    assert first.seq not in seqs(leased)
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 1, 0, 1)


async def test_older_than_max_pending_age_is_dead(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec(max_pending_age=timedelta(hours=1)))
    await append(store, clock, order("o-1"))
    (retried,) = await lease(store, clock, subscription.id)
    retry_at = clock.now() + timedelta(minutes=50)
    retry = Settle(retried.delivery_id, retried.lease_token, Settlement.RETRY, retry_at=retry_at)
    await store.settle_deliveries([retry], now=clock.now())
    clock.advance(timedelta(minutes=30))
    (young,) = await append(store, clock, order("o-2"))

    clock.advance(timedelta(minutes=31))  # o-1 is 61 minutes old, o-2 31

    assert seqs(await lease(store, clock, subscription.id)) == [young.seq]
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 1, 0, 1)


async def test_delayed_event_is_delivered_even_when_the_delay_exceeds_max_pending_age(
    store: Store, clock: ManualClock
) -> None:
    # Max pending age counts from when the delivery was first due, not from when the event was published.
    subscription = await subscribe(store, clock, group_spec(max_pending_age=timedelta(hours=1)))
    due = clock.now() + timedelta(hours=2)
    (delayed,) = await append(store, clock, order("o-1"), not_before=due)
    clock.advance(timedelta(hours=2))

    assert seqs(await lease(store, clock, subscription.id)) == [delayed.seq]
    clock.advance(timedelta(hours=1, seconds=1))  # but it does expire an hour after it became due
    assert await lease(store, clock, subscription.id) == []
    assert _counts(await store.subscription_stats(subscription.id)) == (0, 0, 0, 1)


# -- due times and stats -----------------------------------------------------------------------------------


async def test_next_due_at_follows_the_earliest_open_delivery(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    assert await store.next_due_at(subscription.id) is None

    start = clock.now()
    await append(store, clock, order("o-1"), not_before=start + timedelta(minutes=10))
    assert await store.next_due_at(subscription.id) == start + timedelta(minutes=10)
    await append(store, clock, order("o-2"))
    assert await store.next_due_at(subscription.id) == start

    (held,) = await lease(store, clock, subscription.id)
    assert held.event.event.id == "o-2"
    assert await store.next_due_at(subscription.id) == held.lease_expires_at  # due again when the lease runs out
    await settle_ok(store, clock, [held])
    assert await store.next_due_at(subscription.id) == start + timedelta(minutes=10)


async def test_subscription_stats_count_each_state(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    empty = await store.subscription_stats(subscription.id)
    assert _counts(empty) == (0, 0, 0, 0)
    assert empty.oldest_pending_at is None

    await append(store, clock, order("o-1"))
    clock.advance(10)
    second_batch = clock.now()
    await append(store, clock, order("o-2"), order("o-3"), order("o-4"), order("o-5"))
    clock.advance(10)
    first, second, third, fourth, _fifth = await lease(store, clock, subscription.id)
    dead = Settle(second.delivery_id, second.lease_token, Settlement.DEAD, reason=DeadReason.DROPPED)
    await store.settle_deliveries([ok(first), dead], now=clock.now())
    await store.release_leases([(third.delivery_id, third.lease_token)], now=clock.now())
    retry = Settle(fourth.delivery_id, fourth.lease_token, Settlement.RETRY, retry_at=clock.now() + timedelta(hours=1))
    await store.settle_deliveries([retry], now=clock.now())

    stats = await store.subscription_stats(subscription.id)
    assert _counts(stats) == (2, 1, 1, 1)  # o-3 and o-4 pending, o-5 leased, o-1 succeeded, o-2 dead
    assert stats.oldest_pending_at == second_batch  # o-1 is finished: the oldest open one is from the 2nd batch

    other = await store.subscription_stats("sub_01J00000000000000000000000")
    assert _counts(other) == (0, 0, 0, 0)


# -- retention ---------------------------------------------------------------------------------------------


async def test_prune_removes_finished_work_in_bounded_batches(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec(max_pending_age=timedelta(days=365)))
    done_1, done_2, buried, waiting = await append(store, clock, *(order(f"o-{n}") for n in range(4)))
    unrouted = await append(store, clock, *(order(f"u-{n}", "invoice.sent") for n in range(3)))  # no deliveries
    leased = await lease(store, clock, subscription.id)
    dead = Settle(leased[2].delivery_id, leased[2].lease_token, Settlement.DEAD, reason=DeadReason.GONE)
    retry_at = clock.now() + timedelta(days=30)
    retry = Settle(leased[3].delivery_id, leased[3].lease_token, Settlement.RETRY, retry_at=retry_at)
    assert await store.settle_deliveries([ok(leased[0]), ok(leased[1]), dead, retry], now=clock.now()) == [True] * 4
    clock.advance(timedelta(days=8))
    (fresh,) = await append(store, clock, order("fresh"))
    cutoff = clock.now() - timedelta(days=7)

    limit = 2
    counts = []
    while removed := await store.prune(older_than=cutoff, limit=limit):
        counts.append(removed)
        assert len(counts) < 100
    assert len(counts) >= 3  # bounded: 3 finished deliveries and 6 events do not go in one call
    assert max(counts) <= 2 * limit  # at most `limit` deliveries and `limit` events per call

    gone = [done_1, done_2, buried, *unrouted]
    for outcome in gone:
        assert await store.get_event(outcome.event_id) is None
    assert await store.get_event(waiting.event_id) is not None  # its delivery is still pending
    assert await store.get_event(fresh.event_id) is not None  # newer than the cutoff
    stats = await store.subscription_stats(subscription.id)
    assert _counts(stats) == (2, 0, 0, 0)  # waiting + fresh; finished ones are gone
    assert [e.seq for e in await store.list_events(EventQuery())] == [waiting.seq, fresh.seq]

    clock.advance(timedelta(days=30))
    again = await lease(store, clock, subscription.id)
    assert seqs(again) == [fresh.seq, waiting.seq]  # by due time: fresh was due first
    assert [d.event.event.id for d in again] == ["fresh", "o-3"]  # the kept events are whole


async def test_prune_keeps_events_of_recently_finished_deliveries(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec(max_pending_age=timedelta(days=30)))
    (old,) = await append(store, clock, order("o-1"))
    clock.advance(timedelta(days=8))
    (held,) = await lease(store, clock, subscription.id)
    await settle_ok(store, clock, [held])  # finished just now, about an 8-day-old event

    while await store.prune(older_than=clock.now() - timedelta(days=7), limit=100):
        pass

    assert await store.get_event(old.event_id) is not None
    assert (await store.subscription_stats(subscription.id)).succeeded == 1


async def test_prune_never_touches_pending_or_leased_deliveries(store: Store, clock: ManualClock) -> None:
    subscription, all_seqs = await _subscription_with_events(store, clock, 3, max_pending_age=timedelta(days=400))
    (held,) = await lease(store, clock, subscription.id, limit=1)
    clock.advance(timedelta(days=365))

    while await store.prune(older_than=clock.now(), limit=100):
        pass

    assert _counts(await store.subscription_stats(subscription.id)) == (2, 1, 0, 0)
    assert [e.seq for e in await store.list_events(EventQuery())] == all_seqs  # their events stay too
    assert await store.settle_deliveries([ok(held)], now=clock.now()) == [True]
    assert seqs(await lease(store, clock, subscription.id)) == all_seqs[1:]
