"""Store contract, the log: append, round-trip, dedup, listing, delayed events, wake-ups, durability.

Every test speaks the `Store` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from eventbus.clock import ManualClock
from eventbus.errors import UnavailableError
from eventbus.ids import is_id
from eventbus.model import DataKind, Event
from eventbus.store import open_store
from eventbus.store.base import EventQuery, Store
from tests.conftest import store_url
from tests.store.support import (
    AMOUNT_AT_LEAST_10,
    DEDUP_WINDOW,
    append,
    group_spec,
    lease,
    order,
    seqs,
    settle_ok,
    subscribe,
)

# -- append ------------------------------------------------------------------------------------------------


async def test_empty_store_has_last_seq_zero_and_answers_ping(store: Store) -> None:
    await store.ping()
    assert await store.last_seq() == 0
    assert await store.list_events(EventQuery()) == []


async def test_append_returns_evt_ids_and_increasing_seqs(store: Store, clock: ManualClock) -> None:
    first = await append(store, clock, order("o-1"), order("o-2"), order("o-3"))
    second = await append(store, clock, order("o-4"))
    outcomes = first + second

    assert [o.duplicate for o in outcomes] == [False] * 4
    assert all(is_id(o.event_id, "evt") for o in outcomes)
    assert len({o.event_id for o in outcomes}) == 4
    assert [o.seq for o in outcomes] == sorted(o.seq for o in outcomes)
    assert len({o.seq for o in outcomes}) == 4
    assert outcomes[0].seq >= 1
    assert await store.last_seq() == outcomes[-1].seq


async def test_append_of_nothing_returns_nothing(store: Store, clock: ManualClock) -> None:
    assert await append(store, clock) == []
    assert await store.last_seq() == 0


async def test_seq_keeps_increasing_across_calls_and_time(store: Store, clock: ManualClock) -> None:
    previous = 0
    for n in range(5):
        clock.advance(1)
        (outcome,) = await append(store, clock, order(f"o-{n}"))
        assert outcome.seq > previous
        previous = outcome.seq


_WHEN = datetime(2025, 12, 31, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=-3)))
_EXTENSIONS: dict[str, bool | int | str | bytes | datetime] = {
    "flag": True,
    "off": False,
    "count": 42,
    "negative": -(2**31),
    "label": "héllo wörld",
    "empty": "",
    "blob": bytes(range(256)),
    "when": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "local": _WHEN,
}


@pytest.mark.parametrize(
    ("data", "kind", "content_type", "raw"),
    [
        pytest.param(
            {"amount": 12.5, "items": [1, "two", None, True], "nested": {"ü": "ß"}},
            DataKind.JSON,
            "application/json",
            None,
            id="json",
        ),
        pytest.param("line one\nlíne two\t✓", DataKind.TEXT, "text/plain; charset=utf-8", None, id="text"),
        pytest.param(bytes(range(256)) * 3, DataKind.BINARY, "application/octet-stream", None, id="binary"),
        pytest.param(b"", DataKind.BINARY, "application/octet-stream", b"", id="empty-binary"),
    ],
)
async def test_get_and_find_event_round_trip_every_attribute(
    store: Store, clock: ManualClock, data: object, kind: DataKind, content_type: str, raw: bytes | None
) -> None:
    event = Event.create(
        type="order.item.added",
        source="https://shop.example.com/orders?region=br",
        id="evt-source-id-1",
        subject="order/123",
        time=_WHEN,
        datacontenttype=content_type,
        dataschema="https://schemas.example.com/order/v1.json",
        extensions=_EXTENSIONS,
        data=data,
    )
    (outcome,) = await append(store, clock, event)

    by_id = await store.get_event(outcome.event_id)
    by_key = await store.find_event(event.source, event.id)
    assert by_id is not None
    assert by_id == by_key
    assert by_id.event_id == outcome.event_id
    assert by_id.seq == outcome.seq
    assert by_id.received_at == clock.now()

    stored = by_id.event
    assert stored == event
    assert stored.specversion == "1.0"
    assert stored.subject == "order/123"
    assert stored.time == _WHEN
    assert stored.time is not None and stored.time.utcoffset() == timedelta(hours=-3)
    assert stored.datacontenttype == content_type
    assert stored.dataschema == "https://schemas.example.com/order/v1.json"
    assert dict(stored.extensions) == _EXTENSIONS
    for name, value in _EXTENSIONS.items():
        assert type(stored.extensions[name]) is type(value), name
    assert stored.data_kind is kind
    assert stored.data == event.data  # byte-exact
    if raw is not None:
        assert stored.data == raw
    if kind is DataKind.JSON:
        assert stored.json_data() == data


async def test_minimal_event_round_trips_with_absent_attributes(store: Store, clock: ManualClock) -> None:
    event = Event.create(type="ping", source="/probe", id="p-1")
    (outcome,) = await append(store, clock, event)

    stored = await store.get_event(outcome.event_id)
    assert stored is not None
    assert stored.event == event
    assert stored.event.subject is None
    assert stored.event.time is None
    assert stored.event.datacontenttype is None
    assert stored.event.dataschema is None
    assert dict(stored.event.extensions) == {}
    assert stored.event.data is None
    assert stored.event.data_kind is None


async def test_unknown_events_are_none(store: Store, clock: ManualClock) -> None:
    await append(store, clock, order("o-1"))
    assert await store.get_event("evt_01J00000000000000000000000") is None
    assert await store.find_event("/shop", "nope") is None
    assert await store.find_event("/other", "o-1") is None


async def test_append_is_all_or_nothing(store: Store, clock: ManualClock) -> None:
    # The second event cannot be stored (an extension value no store can encode): the whole call fails.
    unstorable = Event(id="bad", source="/shop", type="order.paid", extensions={"bad": object()})  # type: ignore[dict-item]
    with pytest.raises(Exception):  # noqa: B017 - the error type is the backend's own
        await append(store, clock, order("good"), unstorable)

    assert await store.find_event("/shop", "good") is None
    assert await store.list_events(EventQuery()) == []
    # The store is still usable afterwards.
    (outcome,) = await append(store, clock, order("good"))
    assert outcome.duplicate is False
    assert await store.last_seq() == outcome.seq


# -- dedup -------------------------------------------------------------------------------------------------


async def test_duplicate_inside_window_returns_original_ids_and_fans_out_nothing(
    store: Store, clock: ManualClock
) -> None:
    subscription = await subscribe(store, clock)
    (original,) = await append(store, clock, order("o-1", amount=1))
    clock.advance(DEDUP_WINDOW - timedelta(seconds=1))

    (again,) = await append(store, clock, order("o-1", amount=2))

    assert again.duplicate is True
    assert (again.event_id, again.seq) == (original.event_id, original.seq)
    assert await store.last_seq() == original.seq
    stored = await store.find_event("/shop", "o-1")
    assert stored is not None and stored.event.json_data() == {"amount": 1}  # the original is kept
    assert (await store.subscription_stats(subscription.id)).pending == 1
    assert seqs(await lease(store, clock, subscription.id)) == [original.seq]


async def test_same_id_from_another_source_is_a_different_event(store: Store, clock: ManualClock) -> None:
    (a,) = await append(store, clock, order("o-1", source="/shop"))
    (b,) = await append(store, clock, order("o-1", source="/other-shop"))
    assert b.duplicate is False
    assert b.event_id != a.event_id


async def test_after_the_window_the_same_key_is_a_new_event(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    (original,) = await append(store, clock, order("o-1", amount=1))
    leased = await lease(store, clock, subscription.id)
    await settle_ok(store, clock, leased)
    clock.advance(DEDUP_WINDOW + timedelta(seconds=1))

    (fresh,) = await append(store, clock, order("o-1", amount=2))

    assert fresh.duplicate is False
    assert fresh.event_id != original.event_id
    assert fresh.seq > original.seq
    latest = await store.find_event("/shop", "o-1")
    assert latest is not None and latest.event_id == fresh.event_id  # find_event answers the latest
    assert latest.event.json_data() == {"amount": 2}
    assert seqs(await lease(store, clock, subscription.id)) == [fresh.seq]


async def test_dedup_window_is_per_call(store: Store, clock: ManualClock) -> None:
    (original,) = await append(store, clock, order("o-1"))
    clock.advance(60)
    (short,) = await append(store, clock, order("o-1"), dedup_window=timedelta(seconds=30))
    assert short.duplicate is False
    assert short.event_id != original.event_id


async def test_duplicates_inside_one_append_call(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    outcomes = await append(store, clock, order("o-1", amount=1), order("o-2"), order("o-1", amount=3))

    assert [o.duplicate for o in outcomes] == [False, False, True]
    assert (outcomes[2].event_id, outcomes[2].seq) == (outcomes[0].event_id, outcomes[0].seq)
    assert len(await store.list_events(EventQuery())) == 2
    assert seqs(await lease(store, clock, subscription.id)) == [outcomes[0].seq, outcomes[1].seq]


async def test_concurrent_appends_of_one_event_store_it_once(store: Store, clock: ManualClock) -> None:
    results = await asyncio.gather(*(append(store, clock, order("o-1")) for _ in range(8)))
    outcomes = [r[0] for r in results]
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len({(o.event_id, o.seq) for o in outcomes}) == 1
    assert len(await store.list_events(EventQuery())) == 1


# -- list_events -------------------------------------------------------------------------------------------


async def test_list_events_pages_by_after_seq(store: Store, clock: ManualClock) -> None:
    outcomes = await append(store, clock, *(order(f"o-{n}") for n in range(5)))
    everything = [o.seq for o in outcomes]

    pages: list[list[int]] = []
    after = 0
    while True:
        page = await store.list_events(EventQuery(after_seq=after, limit=2))
        if not page:
            break
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [everything[0:2], everything[2:4], everything[4:5]]
    assert [e.event_id for e in await store.list_events(EventQuery())] == [o.event_id for o in outcomes]
    assert await store.list_events(EventQuery(after_seq=everything[-1])) == []


async def test_list_events_filters_by_source_and_subject(store: Store, clock: ManualClock) -> None:
    a, b, c, d = await append(
        store,
        clock,
        order("o-1", source="/shop", subject="vip-1"),
        order("o-2", source="/shop", subject="regular"),
        order("o-3", source="/bank", subject="vip-1"),
        order("o-4", source="/bank"),
    )

    by_source = await store.list_events(EventQuery(source="/bank"))
    assert [e.seq for e in by_source] == [c.seq, d.seq]
    by_subject = await store.list_events(EventQuery(subject="vip-1"))
    assert [e.seq for e in by_subject] == [a.seq, c.seq]
    both = await store.list_events(EventQuery(source="/shop", subject="vip-1"))
    assert [e.seq for e in both] == [a.seq]
    assert await store.list_events(EventQuery(source="/nowhere")) == []
    assert [e.seq for e in await store.list_events(EventQuery(source="/shop", after_seq=a.seq))] == [b.seq]


async def test_list_events_filters_by_received_time(store: Store, clock: ManualClock) -> None:
    start = clock.now()
    (early,) = await append(store, clock, order("o-1"))
    clock.advance(10)
    (middle,) = await append(store, clock, order("o-2"))
    clock.advance(10)
    (late,) = await append(store, clock, order("o-3"))

    after = await store.list_events(EventQuery(received_after=start + timedelta(seconds=5)))
    assert [e.seq for e in after] == [middle.seq, late.seq]
    before = await store.list_events(EventQuery(received_before=start + timedelta(seconds=15)))
    assert [e.seq for e in before] == [early.seq, middle.seq]
    window = EventQuery(received_after=start + timedelta(seconds=5), received_before=start + timedelta(seconds=15))
    assert [e.seq for e in await store.list_events(window)] == [middle.seq]


# -- delayed events ----------------------------------------------------------------------------------------


async def test_not_before_delays_delivery(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    due = clock.now() + timedelta(minutes=5)
    (delayed,) = await append(store, clock, order("o-1"), not_before=due)

    assert await lease(store, clock, subscription.id) == []
    assert await store.next_due_at(subscription.id) == due
    stats = await store.subscription_stats(subscription.id)
    assert (stats.pending, stats.leased) == (1, 0)

    clock.advance(timedelta(minutes=5) - timedelta(seconds=1))
    assert await lease(store, clock, subscription.id) == []
    clock.advance(1)
    assert seqs(await lease(store, clock, subscription.id)) == [delayed.seq]


async def test_not_before_in_the_past_is_due_at_once(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    (outcome,) = await append(store, clock, order("o-1"), not_before=clock.now() - timedelta(hours=1))
    assert seqs(await lease(store, clock, subscription.id)) == [outcome.seq]


# -- wake-ups ----------------------------------------------------------------------------------------------


async def test_append_wakes_the_waiters_of_subscriptions_it_fans_out_to(store: Store, clock: ManualClock) -> None:
    orders = await subscribe(store, clock, group_spec("orders", ("order.*",)))
    big = await subscribe(store, clock, group_spec("big", ("order.*",), filter_json=AMOUNT_AT_LEAST_10))
    users = await subscribe(store, clock, group_spec("users", ("user.**",)))
    orders_waiter = store.wakeups.register(orders.id)
    big_waiter = store.wakeups.register(big.id)
    users_waiter = store.wakeups.register(users.id)

    await append(store, clock, order("o-1", amount=5))

    assert orders_waiter.is_set()
    assert not big_waiter.is_set()  # the filter did not match: no delivery, no wake-up
    assert not users_waiter.is_set()

    await append(store, clock, Event.create(type="user.signed.up", source="/auth", id="u-1"))
    assert users_waiter.is_set()
    assert not big_waiter.is_set()


async def test_unregistered_waiters_are_not_woken(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    waiter = store.wakeups.register(subscription.id)
    store.wakeups.unregister(subscription.id, waiter)
    await append(store, clock, order("o-1"))
    assert not waiter.is_set()


async def test_a_duplicate_wakes_nobody(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock)
    await append(store, clock, order("o-1"))
    waiter = store.wakeups.register(subscription.id)
    (again,) = await append(store, clock, order("o-1"))
    assert again.duplicate is True
    assert not waiter.is_set()


# -- lifecycle and durability ------------------------------------------------------------------------------


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    other = open_store(store_url(tmp_path / "closed"))
    await other.open()
    await other.ping()
    await other.close()
    with pytest.raises(UnavailableError):
        await other.ping()
    await other.close()  # closing twice is harmless


async def test_everything_survives_close_and_reopen(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    subscription = await subscribe(store, clock, group_spec(filter_json=AMOUNT_AT_LEAST_10))
    binary = Event.create(type="order.raw", source="/shop", id="raw", data=bytes(range(256)))
    outcomes = await append(store, clock, order("o-1", amount=50), order("o-2", amount=60), binary)
    (done, _) = await lease(store, clock, subscription.id)
    assert await settle_ok(store, clock, [done]) == [True]
    await store.close()

    reopened = open_store(store_url(tmp_path))
    await reopened.open()
    try:
        assert await reopened.last_seq() == outcomes[-1].seq
        assert [e.event_id for e in await reopened.list_events(EventQuery())] == [o.event_id for o in outcomes]
        raw = await reopened.find_event("/shop", "raw")
        assert raw is not None and raw.event == binary
        assert await reopened.get_subscription(subscription.id) == subscription
        stats = await reopened.subscription_stats(subscription.id)
        # The open lease is either kept or handed back (a backend may release leases its dead process held);
        # either way the delivery is not lost and is leasable once the lease would have run out.
        assert (stats.pending + stats.leased, stats.succeeded, stats.dead) == (1, 1, 0)
        clock.advance(31)
        again = await reopened.lease_deliveries(
            subscription.id, limit=10, lease_for=timedelta(seconds=30), now=clock.now()
        )
        assert [d.event.seq for d in again] == [outcomes[1].seq]
        # Dedup and seq survive as well.
        (dup,) = await reopened.append([order("o-1")], now=clock.now(), not_before=None, dedup_window=DEDUP_WINDOW)
        assert dup.duplicate is True and dup.event_id == outcomes[0].event_id
        (new,) = await reopened.append([order("o-9")], now=clock.now(), not_before=None, dedup_window=DEDUP_WINDOW)
        assert new.seq > outcomes[-1].seq
    finally:
        await reopened.close()
