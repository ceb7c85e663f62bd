"""Store contract, sources: names, compare-and-set updates, ingest with its raw request, redeliveries by the
provider's delivery id, and retention of raw requests.

Every test speaks the `SourceStore` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from eventbus.clock import ManualClock
from eventbus.errors import AlreadyExistsError, ConcurrentUpdateError
from eventbus.model import Event
from eventbus.store.base import EventQuery, Store
from eventbus.store.sources import RawRequest, SourceSecret, SourceSpec, source_store_of
from tests.store.support import group_spec, lease, subscribe

WINDOW = timedelta(hours=24)


def request(source_id: str, dedup_key: str | None = "d-1") -> RawRequest:
    return RawRequest(
        source_id=source_id,
        method="POST",
        path="/hooks/shop",
        query=(("page", "2"),),
        headers=(("X-Signature", "[redacted]"), ("Content-Type", "application/json")),
        body=b'{"n": 1}',
        remote="203.0.113.7",
        dedup_key=dedup_key,
    )


def hook_event(id: str, type: str = "test.item") -> Event:
    return Event.create(type=type, source="/hooks/shop", id=id, data={"n": 1})


async def test_sources_are_unique_by_name_and_updated_by_compare_and_set(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    created = await sources.create_source(
        SourceSpec(name="shop", connector="test", secrets=(SourceSecret("s-1"),)), now=clock.now()
    )
    with pytest.raises(AlreadyExistsError):
        await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    assert await sources.find_source("shop") == created
    clock.advance(1)
    rotated = (SourceSecret("s-2"), SourceSecret("s-1", clock.now() + timedelta(hours=24)))
    updated = await sources.update_source(
        created.id, {"secrets": rotated, "enabled": False}, now=clock.now(), if_updated_at=created.updated_at
    )
    assert updated.active_secrets(clock.now()) == ("s-2", "s-1")
    assert updated.active_secrets(clock.now() + timedelta(hours=25)) == ("s-2",)
    assert updated.enabled is False
    with pytest.raises(ConcurrentUpdateError):  # written against the old version
        await sources.update_source(created.id, {"enabled": True}, now=clock.now(), if_updated_at=created.updated_at)
    assert await sources.delete_source(created.id, now=clock.now()) is True
    assert await sources.find_source("shop") is None
    await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())  # the name is free again


async def test_concurrent_creates_of_one_name_have_one_winner(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    await asyncio.gather(*(sources.find_source("shop") for _ in range(8)))  # a connection for each writer
    results = await asyncio.gather(
        *(sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now()) for _ in range(8)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, AlreadyExistsError) for r in results if r is not won[0])


async def test_concurrent_updates_of_one_version_have_one_winner(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    created = await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    await asyncio.gather(*(sources.get_source(created.id) for _ in range(8)))  # a connection for each writer
    clock.advance(1)
    results = await asyncio.gather(
        *(
            sources.update_source(created.id, {"options": {"n": n}}, now=clock.now(), if_updated_at=created.updated_at)
            for n in range(8)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, ConcurrentUpdateError) for r in results if r is not won[0])
    assert await sources.get_source(created.id) == won[0]


async def test_ingest_stores_events_and_the_raw_request_together(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    source = await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    subscription = await subscribe(store, clock, group_spec(patterns=("test.*",)))
    outcomes, replayed = await sources.ingest(
        [hook_event("d-1.0"), hook_event("d-1.1")], request(source.id), now=clock.now(), dedup_window=WINDOW
    )
    assert (replayed, [o.id for o in outcomes], [o.duplicate for o in outcomes]) == (
        False,
        ["d-1.0", "d-1.1"],
        [False, False],
    )
    assert len(await lease(store, clock, subscription.id)) == 2  # fanned out in the same transaction
    kept = await sources.find_request(outcomes[1].seq)
    assert kept is not None
    assert kept.request == request(source.id)
    assert [o.event_id for o in kept.outcomes] == [o.event_id for o in outcomes]


async def test_a_redelivery_by_dedup_key_returns_the_first_outcomes_and_stores_nothing(
    store: Store, clock: ManualClock
) -> None:
    sources = source_store_of(store)
    source = await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    first, _ = await sources.ingest([hook_event("a")], request(source.id), now=clock.now(), dedup_window=WINDOW)
    clock.advance(60)
    # The connector made a different event id this time: the delivery id still says it is the same delivery.
    again, replayed = await sources.ingest([hook_event("b")], request(source.id), now=clock.now(), dedup_window=WINDOW)
    assert replayed is True
    assert again == first  # the first answer, as it was
    assert [e.event.id for e in await store.list_events(EventQuery())] == ["a"]
    clock.advance(WINDOW)  # past the window the key is forgotten
    later, replayed = await sources.ingest([hook_event("c")], request(source.id), now=clock.now(), dedup_window=WINDOW)
    assert replayed is False and later[0].duplicate is False


async def test_concurrent_redeliveries_store_the_delivery_once(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    source = await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    # Reads first, so a pooled backend has a connection ready for each request and the ingests really overlap.
    await asyncio.gather(*(sources.get_source(source.id) for _ in range(8)))
    answers = await asyncio.gather(
        *(
            sources.ingest([hook_event(f"try-{n}")], request(source.id), now=clock.now(), dedup_window=WINDOW)
            for n in range(8)
        )
    )
    first = [outcomes for outcomes, replayed in answers if not replayed]
    assert len(first) == 1
    assert all(outcomes == first[0] for outcomes, _ in answers)
    assert len(await store.list_events(EventQuery())) == 1


async def test_raw_requests_are_pruned_with_retention(store: Store, clock: ManualClock) -> None:
    sources = source_store_of(store)
    source = await sources.create_source(SourceSpec(name="shop", connector="test"), now=clock.now())
    [outcome], _ = await sources.ingest(
        [hook_event("a")], request(source.id, None), now=clock.now(), dedup_window=WINDOW
    )
    clock.advance(timedelta(days=8))
    assert await sources.prune_requests(older_than=clock.now() - timedelta(days=7), limit=10) == 1
    assert await sources.find_request(outcome.seq) is None
