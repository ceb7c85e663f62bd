"""Store contract, destination state: values with expiry, the per-subscription cap, shared scopes.

Every test speaks the `StateStore` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from eventbus.clock import ManualClock
from eventbus.store.base import Store
from eventbus.store.state import MAX_KEYS, state_store_of


async def test_values_replace_and_expire(store: Store, clock: ManualClock) -> None:
    state = state_store_of(store)
    await state.state_set("sub_a", "token", "one", expires_at=None, now=clock.now())
    assert await state.state_set(
        "sub_a", "token", "two", expires_at=clock.now() + timedelta(minutes=5), now=clock.now()
    )
    assert await state.state_get("sub_a", "token", now=clock.now()) == "two"
    assert await state.state_get("sub_b", "token", now=clock.now()) is None  # per subscription
    assert await state.state_get("sub_a", "token", now=clock.now() + timedelta(minutes=5)) is None
    await state.state_delete("sub_a", "token")
    assert await state.state_get("sub_a", "token", now=clock.now()) is None
    await state.state_use("scripted/acct", "sub_a")
    await state.state_use("scripted/acct", "sub_a")  # recorded once, no error


async def test_the_cap_counts_live_keys_and_expired_ones_make_room(store: Store, clock: ManualClock) -> None:
    state = state_store_of(store)
    soon = clock.now() + timedelta(seconds=10)
    for n in range(MAX_KEYS):
        assert await state.state_set("sub_a", f"k{n}", "v", expires_at=soon if n == 0 else None, now=clock.now())
    assert not await state.state_set("sub_a", "one-more", "v", expires_at=None, now=clock.now())
    assert await state.state_set("sub_a", "k1", "changed", expires_at=None, now=clock.now())  # a held key: fine
    clock.advance(10)
    assert await state.state_set("sub_a", "one-more", "v", expires_at=None, now=clock.now())  # k0 expired
    assert await state.state_get("sub_a", "one-more", now=clock.now()) == "v"


async def test_the_cap_holds_for_concurrent_writers(store: Store, clock: ManualClock) -> None:
    state = state_store_of(store)
    for n in range(MAX_KEYS - 1):
        await state.state_set("sub_a", f"k{n}", "v", expires_at=None, now=clock.now())
    # Readers first, so a pooled backend has a connection ready for each writer and the writes really overlap.
    await asyncio.gather(*(state.state_get("sub_a", "k0", now=clock.now()) for _ in range(8)))
    stored = await asyncio.gather(
        *(state.state_set("sub_a", f"new{n}", "v", expires_at=None, now=clock.now()) for n in range(8))
    )
    assert sorted(stored) == [False] * 7 + [True]
    kept = [await state.state_get("sub_a", f"new{n}", now=clock.now()) for n in range(8)]
    assert kept.count("v") == 1
