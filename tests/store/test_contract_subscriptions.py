"""Store contract, subscriptions: create/find/list, fan-out at append, start positions and backfill, seek,
delete and purge, activity tracking.

Every test speaks the `Store` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from eventbus.clock import ManualClock
from eventbus.errors import NotFoundError
from eventbus.ids import is_id
from eventbus.model import Event
from eventbus.store.base import StartPosition, Store, SubscriptionSpec
from tests.store.support import (
    AMOUNT_AT_LEAST_10,
    append,
    group_spec,
    lease,
    ok,
    order,
    run_backfill,
    seqs,
    settle_ok,
    subscribe,
)

EARLIEST = StartPosition(edge="earliest")

# -- create, find, list ------------------------------------------------------------------------------------


async def test_create_subscription_keeps_every_field(store: Store, clock: ManualClock) -> None:
    spec = SubscriptionSpec(
        kind="grpc",
        name="billing",
        patterns=("order.*", "invoice.**"),
        filter_json=AMOUNT_AT_LEAST_10,
        retry_schedule=(timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=2)),
        max_pending_age=timedelta(hours=6),
        ephemeral=True,
        options={"max_in_flight": 10, "ack_deadline": 30.5, "tags": ["a", "b"], "nested": {"x": None}},
    )
    subscription, created = await store.create_subscription(spec, start=StartPosition(), now=clock.now())

    assert created is True
    assert is_id(subscription.id, "sub")
    assert subscription.kind == "grpc"
    assert subscription.name == "billing"
    assert subscription.patterns == ("order.*", "invoice.**")
    assert subscription.filter_json == AMOUNT_AT_LEAST_10
    assert subscription.retry_schedule == spec.retry_schedule
    assert subscription.max_attempts == 4
    assert subscription.max_pending_age == timedelta(hours=6)
    assert subscription.ephemeral is True
    assert subscription.options == spec.options
    assert subscription.state == "active"
    assert subscription.created_at == clock.now()
    assert subscription.last_active_at == clock.now()
    assert subscription.backfilling is False

    assert await store.get_subscription(subscription.id) == subscription
    assert await store.find_subscription("grpc", "billing") == subscription
    assert await store.find_subscription("webhook", "billing") is None
    assert await store.get_subscription("sub_01J00000000000000000000000") is None


async def test_create_with_a_live_name_returns_the_existing_one(store: Store, clock: ManualClock) -> None:
    first = await subscribe(store, clock, group_spec("billing", ("order.*",)))
    clock.advance(5)

    again, created = await store.create_subscription(
        group_spec("billing", ("user.*",), ephemeral=True), start=EARLIEST, now=clock.now()
    )

    assert created is False
    assert again == first  # unchanged: not the new spec, not the new time
    other_kind, created = await store.create_subscription(
        group_spec("billing", kind="webhook"), start=StartPosition(), now=clock.now()
    )
    assert created is True and other_kind.id != first.id


async def test_concurrent_creates_of_one_name_make_one_subscription(store: Store, clock: ManualClock) -> None:
    results = await asyncio.gather(
        *(store.create_subscription(group_spec("billing"), start=StartPosition(), now=clock.now()) for _ in range(6))
    )
    assert sum(created for _, created in results) == 1
    assert len({subscription.id for subscription, _ in results}) == 1


async def test_unnamed_subscriptions_are_always_new(store: Store, clock: ManualClock) -> None:
    a = await subscribe(store, clock, group_spec(None))
    b = await subscribe(store, clock, group_spec(None))
    assert a.id != b.id
    assert a.name is None


async def test_list_subscriptions_pages_by_id_within_a_kind(store: Store, clock: ManualClock) -> None:
    ids = sorted([(await subscribe(store, clock, group_spec(f"g{n}"))).id for n in range(5)])
    await subscribe(store, clock, group_spec("hook", kind="webhook"))

    pages: list[list[str]] = []
    after = ""
    while page := await store.list_subscriptions("grpc", after_id=after, limit=2):
        pages.append([s.id for s in page])
        after = page[-1].id
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert [s.name for s in await store.list_subscriptions("webhook", after_id="", limit=10)] == ["hook"]


# -- fan-out at append -------------------------------------------------------------------------------------


async def test_append_fans_out_to_matching_subscriptions_only(store: Store, clock: ManualClock) -> None:
    orders = await subscribe(store, clock, group_spec("orders", ("order.*",)))
    big = await subscribe(store, clock, group_spec("big", ("order.*",), filter_json=AMOUNT_AT_LEAST_10))
    deep = await subscribe(store, clock, group_spec("deep", ("order.**",)))
    users = await subscribe(store, clock, group_spec("users", ("user.**",)))

    small, large, item, user = await append(
        store,
        clock,
        order("o-1", amount=5),
        order("o-2", amount=50),
        order("o-3", "order.item.added", amount=70),
        Event.create(type="user.signed.up", source="/auth", id="u-1", data={"amount": 99}),
    )

    assert seqs(await lease(store, clock, orders.id)) == [small.seq, large.seq]
    assert seqs(await lease(store, clock, big.id)) == [large.seq]
    assert seqs(await lease(store, clock, deep.id)) == [small.seq, large.seq, item.seq]
    assert seqs(await lease(store, clock, users.id)) == [user.seq]


async def test_leased_delivery_carries_the_stored_event(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    (outcome,) = await append(store, clock, order("o-1", subject="s-1"))

    (delivery,) = await lease(store, clock, subscription.id)

    assert is_id(delivery.delivery_id, "dlv")
    assert delivery.subscription_id == subscription.id
    assert delivery.event == await store.get_event(outcome.event_id)


async def test_filters_see_extensions_and_attributes(store: Store, clock: ManualClock) -> None:
    spec = group_spec(filter_json='{"ext.tenant":"acme","subject":{"$prefix":"vip-"}}')
    subscription = await subscribe(store, clock, spec)
    events = [
        Event.create(type="order.paid", source="/s", id="1", subject="vip-1", extensions={"tenant": "acme"}),
        Event.create(type="order.paid", source="/s", id="2", subject="vip-2", extensions={"tenant": "other"}),
        Event.create(type="order.paid", source="/s", id="3", subject="regular", extensions={"tenant": "acme"}),
        Event.create(type="order.paid", source="/s", id="4", subject="vip-4", data=b"\x00not json"),
    ]
    first, *_ = await append(store, clock, *events)
    assert seqs(await lease(store, clock, subscription.id)) == [first.seq]


async def test_system_events_reach_only_system_patterns(store: Store, clock: ManualClock) -> None:
    everything = await subscribe(store, clock, group_spec("all", ("**",)))
    system = await subscribe(store, clock, group_spec("system", ("eventbus.**",)))
    (ordinary, internal) = await append(
        store, clock, order("o-1"), Event.create(type="eventbus.delivery.dead", source="/eventbus", id="x")
    )
    assert seqs(await lease(store, clock, everything.id)) == [ordinary.seq]
    assert seqs(await lease(store, clock, system.id)) == [internal.seq]


# -- start positions and backfill --------------------------------------------------------------------------


async def test_start_latest_skips_old_events(store: Store, clock: ManualClock) -> None:
    await append(store, clock, order("old"))
    subscription = await subscribe(store, clock, start=StartPosition())

    assert subscription.backfilling is False
    assert subscription.id not in await store.pending_backfills()
    assert await store.backfill(subscription.id, now=clock.now(), limit=10) is False
    assert await lease(store, clock, subscription.id) == []
    (new,) = await append(store, clock, order("new"))
    assert seqs(await lease(store, clock, subscription.id)) == [new.seq]


async def test_start_earliest_backfills_in_chunks(store: Store, clock: ManualClock) -> None:
    old = await append(
        store,
        clock,
        order("o-1"),
        order("o-2", "order.item.added"),  # does not match order.*
        order("o-3"),
        order("o-4"),
        order("o-5"),
    )
    subscription = await subscribe(store, clock, start=EARLIEST)

    assert subscription.backfilling is True
    assert await store.pending_backfills() == [subscription.id]
    assert await lease(store, clock, subscription.id) == []  # nothing until the backfill runs
    (during,) = await append(store, clock, order("o-6"))  # fanned out as usual meanwhile

    assert await run_backfill(store, clock, subscription.id, limit=2) >= 3

    assert await store.pending_backfills() == []
    refreshed = await store.get_subscription(subscription.id)
    assert refreshed is not None and refreshed.backfilling is False
    leased = await lease(store, clock, subscription.id)
    assert sorted(seqs(leased)) == [old[0].seq, old[2].seq, old[3].seq, old[4].seq, during.seq]  # each once
    assert await store.backfill(subscription.id, now=clock.now(), limit=2) is False


async def test_a_group_gets_its_backlog_in_seq_order_before_what_was_published_after_it_joined(
    store: Store, clock: ManualClock
) -> None:
    old = await append(store, clock, *(order(f"o-{n}") for n in range(5)))
    subscription = await subscribe(store, clock, start=EARLIEST)
    clock.advance(1)
    (during,) = await append(store, clock, order("during"))  # due before any chunk the backfill creates later

    assert await lease(store, clock, subscription.id) == []  # held behind the backlog, which has no deliveries yet
    assert await store.next_due_at(subscription.id) is None  # so a stream waits for a wake-up instead of spinning
    clock.advance(1)
    assert await store.backfill(subscription.id, now=clock.now(), limit=2) is True
    first = await lease(store, clock, subscription.id)
    assert seqs(first) == [old[0].seq, old[1].seq]  # the backlog's first chunk, not yet the event after it
    clock.advance(1)
    await run_backfill(store, clock, subscription.id)

    rest = await lease(store, clock, subscription.id)
    assert seqs(rest) == [o.seq for o in old[2:]] + [during.seq]


async def test_a_finished_backfill_wakes_waiters_even_when_its_last_chunk_matched_nothing(
    store: Store, clock: ManualClock
) -> None:
    await append(store, clock, order("o-1"), order("o-2", "order.item.added"))
    subscription = await subscribe(store, clock, group_spec(patterns=("order.paid",)), start=EARLIEST)
    assert await store.backfill(subscription.id, now=clock.now(), limit=1) is True
    waiter = store.wakeups.register(subscription.id)
    assert await store.backfill(subscription.id, now=clock.now(), limit=1) is False
    assert waiter.is_set()  # what came after the backlog may go out now


async def test_backfill_applies_the_filter(store: Store, clock: ManualClock) -> None:
    _, big = await append(store, clock, order("o-1", amount=5), order("o-2", amount=50))
    subscription = await subscribe(store, clock, group_spec(filter_json=AMOUNT_AT_LEAST_10), start=EARLIEST)
    await run_backfill(store, clock, subscription.id, limit=10)
    assert seqs(await lease(store, clock, subscription.id)) == [big.seq]


async def test_backfill_wakes_waiters(store: Store, clock: ManualClock) -> None:
    await append(store, clock, order("o-1"))
    subscription = await subscribe(store, clock, start=EARLIEST)
    waiter = store.wakeups.register(subscription.id)
    await run_backfill(store, clock, subscription.id)
    assert waiter.is_set()


async def test_start_at_seq_includes_that_seq(store: Store, clock: ManualClock) -> None:
    outcomes = await append(store, clock, *(order(f"o-{n}") for n in range(5)))
    subscription = await subscribe(store, clock, start=StartPosition(edge="seq", seq=outcomes[2].seq))
    await run_backfill(store, clock, subscription.id)
    assert seqs(await lease(store, clock, subscription.id)) == [o.seq for o in outcomes[2:]]


async def test_start_at_seq_past_the_end_has_no_backlog(store: Store, clock: ManualClock) -> None:
    (last,) = await append(store, clock, order("o-1"))
    subscription = await subscribe(store, clock, start=StartPosition(edge="seq", seq=last.seq + 10))
    assert subscription.backfilling is False
    assert await store.pending_backfills() == []
    assert await lease(store, clock, subscription.id) == []


async def test_start_at_time_begins_at_events_received_since(store: Store, clock: ManualClock) -> None:
    start = clock.now()
    await append(store, clock, order("o-1"))
    clock.advance(10)
    later = await append(store, clock, order("o-2"), order("o-3"))
    clock.advance(10)

    subscription = await subscribe(store, clock, start=StartPosition(edge="time", time=start + timedelta(seconds=5)))
    await run_backfill(store, clock, subscription.id)

    assert seqs(await lease(store, clock, subscription.id)) == [o.seq for o in later]


async def test_start_at_a_future_time_has_no_backlog(store: Store, clock: ManualClock) -> None:
    await append(store, clock, order("o-1"))
    future = StartPosition(edge="time", time=clock.now() + timedelta(hours=1))
    subscription = await subscribe(store, clock, start=future)
    assert subscription.backfilling is False
    assert await lease(store, clock, subscription.id) == []


async def test_backfilled_delayed_event_waits_for_not_before(store: Store, clock: ManualClock) -> None:
    due = clock.now() + timedelta(minutes=10)
    (delayed,) = await append(store, clock, order("o-1"), not_before=due)
    subscription = await subscribe(store, clock, start=EARLIEST)
    await run_backfill(store, clock, subscription.id)

    assert await lease(store, clock, subscription.id) == []
    assert await store.next_due_at(subscription.id) == due
    clock.advance(timedelta(minutes=10))
    assert seqs(await lease(store, clock, subscription.id)) == [delayed.seq]


# -- seek --------------------------------------------------------------------------------------------------


async def test_seek_back_replaces_pending_deliveries_and_redelivers(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    first = await append(store, clock, order("o-1"), order("o-2"), order("o-3"))
    assert await settle_ok(store, clock, await lease(store, clock, subscription.id)) == [True] * 3
    (fourth,) = await append(store, clock, order("o-4"))
    (stale,) = await lease(store, clock, subscription.id)  # o-4, leased when the seek happens
    (fifth,) = await append(store, clock, order("o-5"))  # o-5, pending when the seek happens

    await store.seek_subscription(subscription.id, start=StartPosition(edge="seq", seq=first[1].seq), now=clock.now())

    stats = await store.subscription_stats(subscription.id)
    assert (stats.pending, stats.leased) == (0, 0)  # dropped, to be replaced by the backfill
    assert subscription.id in await store.pending_backfills()
    assert (await store.settle_deliveries([ok(stale)], now=clock.now())) == [False]

    await run_backfill(store, clock, subscription.id)

    again = await lease(store, clock, subscription.id)
    assert seqs(again) == [first[1].seq, first[2].seq, fourth.seq, fifth.seq]  # each exactly once
    assert all(d.attempt == 1 for d in again)


async def test_seek_to_latest_drops_the_backlog(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    await append(store, clock, order("o-1"), order("o-2"))
    await lease(store, clock, subscription.id, limit=1)

    await store.seek_subscription(subscription.id, start=StartPosition(), now=clock.now())

    assert await store.pending_backfills() == []
    assert await lease(store, clock, subscription.id) == []
    assert await store.next_due_at(subscription.id) is None
    (new,) = await append(store, clock, order("o-3"))
    assert seqs(await lease(store, clock, subscription.id)) == [new.seq]


async def test_seek_wakes_waiters(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    waiter = store.wakeups.register(subscription.id)
    await store.seek_subscription(subscription.id, start=EARLIEST, now=clock.now())
    assert waiter.is_set()


async def test_seek_of_an_unknown_subscription_is_not_found(store: Store, clock: ManualClock) -> None:
    with pytest.raises(NotFoundError):
        await store.seek_subscription("sub_01J00000000000000000000000", start=EARLIEST, now=clock.now())
    subscription = await subscribe(store, clock)
    await store.delete_subscription(subscription.id, now=clock.now())
    with pytest.raises(NotFoundError):
        await store.seek_subscription(subscription.id, start=EARLIEST, now=clock.now())


# -- delete and purge --------------------------------------------------------------------------------------


async def test_delete_stops_fan_out_and_leases_at_once(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, group_spec("billing"))
    await append(store, clock, order("o-1"), order("o-2"))
    (held,) = await lease(store, clock, subscription.id, limit=1)
    waiter = store.wakeups.register(subscription.id)

    assert await store.delete_subscription(subscription.id, now=clock.now()) is True
    assert await store.delete_subscription(subscription.id, now=clock.now()) is False

    assert await store.get_subscription(subscription.id) is None
    assert await store.find_subscription("grpc", "billing") is None
    assert await store.list_subscriptions("grpc", after_id="", limit=10) == []
    assert waiter.is_set()  # whoever serves it is told to look again (and finds it gone)
    waiter.clear()
    await append(store, clock, order("o-3"))
    assert not waiter.is_set()  # no fan-out to a deleted subscription
    assert await lease(store, clock, subscription.id) == []
    clock.advance(held.lease_expires_at - clock.now() + timedelta(seconds=1))
    assert await lease(store, clock, subscription.id) == []
    assert await store.backfill(subscription.id, now=clock.now(), limit=10) is False


async def test_delete_stops_a_backfill(store: Store, clock: ManualClock) -> None:
    await append(store, clock, order("o-1"))
    subscription = await subscribe(store, clock, start=EARLIEST)
    await store.delete_subscription(subscription.id, now=clock.now())
    assert await store.pending_backfills() == []
    assert await store.backfill(subscription.id, now=clock.now(), limit=10) is False


async def test_purge_deleted_removes_rows_in_batches(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    keeper = await subscribe(store, clock, group_spec("keeper"))
    await append(store, clock, *(order(f"o-{n}") for n in range(5)))
    await settle_ok(store, clock, await lease(store, clock, subscription.id, limit=2))
    await store.delete_subscription(subscription.id, now=clock.now())

    counts = []
    while count := await store.purge_deleted(limit=2):
        assert count <= 2
        counts.append(count)
        assert len(counts) < 100
    assert sum(counts) >= 5  # five deliveries at least (plus whatever else the backend keeps)
    assert len(counts) >= 3
    assert await store.purge_deleted(limit=2) == 0

    stats = await store.subscription_stats(subscription.id)
    assert (stats.pending, stats.leased, stats.succeeded, stats.dead) == (0, 0, 0, 0)
    assert (await store.subscription_stats(keeper.id)).pending == 5  # another subscription's rows stay


async def test_purge_deleted_never_removes_more_than_limit(store: Store, clock: ManualClock) -> None:
    for n in range(5):
        subscription = await subscribe(store, clock, group_spec(f"g{n}"))
        await store.delete_subscription(subscription.id, now=clock.now())

    counts = []
    while count := await store.purge_deleted(limit=2):
        counts.append(count)
        assert len(counts) < 100
    assert sum(counts) == 5
    assert max(counts) <= 2


async def test_a_name_is_reusable_after_delete(store: Store, clock: ManualClock) -> None:
    old = await subscribe(store, clock, group_spec("billing"))
    (before,) = await append(store, clock, order("o-1"))
    await store.delete_subscription(old.id, now=clock.now())

    new, created = await store.create_subscription(group_spec("billing"), start=StartPosition(), now=clock.now())
    assert created is True
    assert new.id != old.id
    assert await store.find_subscription("grpc", "billing") == new
    again, created = await store.create_subscription(group_spec("billing"), start=StartPosition(), now=clock.now())
    assert created is False and again.id == new.id

    (after,) = await append(store, clock, order("o-2"))
    assert seqs(await lease(store, clock, new.id)) == [after.seq]  # not o-1: that was the old one's
    assert before.seq < after.seq
    while await store.purge_deleted(limit=100):
        pass
    assert await store.get_subscription(new.id) == new  # purging the old one leaves the new one alone


# -- activity ----------------------------------------------------------------------------------------------


async def test_idle_subscriptions_use_separate_cutoffs(store: Store, clock: ManualClock) -> None:
    ephemeral = await subscribe(store, clock, group_spec("tail-1", ephemeral=True))
    durable = await subscribe(store, clock, group_spec("billing"))
    await subscribe(store, clock, group_spec("hook", kind="webhook"))
    clock.advance(timedelta(minutes=10))

    async def idle() -> list[str]:
        now = clock.now()
        found = await store.idle_subscriptions(
            "grpc", ephemeral_before=now - timedelta(minutes=5), durable_before=now - timedelta(days=1)
        )
        return sorted(found)

    assert await idle() == [ephemeral.id]

    await store.touch_subscriptions([ephemeral.id], now=clock.now())
    touched = await store.get_subscription(ephemeral.id)
    assert touched is not None and touched.last_active_at == clock.now()
    assert await idle() == []

    clock.advance(timedelta(days=2))
    assert await idle() == sorted([ephemeral.id, durable.id])

    await store.touch_subscriptions([durable.id], now=clock.now())
    await store.delete_subscription(ephemeral.id, now=clock.now())
    assert await idle() == []
    await store.touch_subscriptions([], now=clock.now())  # nothing to touch is fine
