"""Store contract, idempotency keys: one claim wins, answers are kept, stale and expired claims are taken over.

Every test speaks the `IdempotencyStore` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from eventbus.clock import ManualClock
from eventbus.store.base import Store
from eventbus.store.idempotency import (
    IDEMPOTENCY_KEEP_FOR,
    IDEMPOTENCY_STALE_AFTER,
    StoredAnswer,
    idempotency_store_of,
)

SCOPE = "key_1 POST /v1/endpoints"


async def claim(store: Store, clock: ManualClock, digest: str = "sha-1", key: str = "k-1") -> StoredAnswer | None:
    now = clock.now()
    return await idempotency_store_of(store).claim_idempotency_key(
        SCOPE,
        key,
        digest,
        now=now,
        expires_before=now - IDEMPOTENCY_KEEP_FOR,
        stale_before=now - IDEMPOTENCY_STALE_AFTER,
    )


async def test_the_first_claim_wins_and_its_answer_is_given_again(store: Store, clock: ManualClock) -> None:
    keys = idempotency_store_of(store)
    assert await claim(store, clock) is None
    claimed_at = clock.now()
    clock.advance(1)
    in_progress = await claim(store, clock, "sha-2")
    assert in_progress == StoredAnswer("sha-1", None, None, None, claimed_at)
    await keys.answer_idempotency_key(SCOPE, "k-1", status=201, content_type="application/json", body=b"{}")
    answered = await claim(store, clock)
    assert answered == StoredAnswer("sha-1", 201, "application/json", b"{}", claimed_at)
    await keys.release_idempotency_key(SCOPE, "k-1")  # an answered key is not released
    assert await claim(store, clock) == answered


async def test_released_stale_and_expired_keys_are_claimed_again(store: Store, clock: ManualClock) -> None:
    keys = idempotency_store_of(store)
    assert await claim(store, clock) is None
    await keys.release_idempotency_key(SCOPE, "k-1")
    assert await claim(store, clock) is None  # released: free again
    clock.advance(IDEMPOTENCY_STALE_AFTER + timedelta(seconds=1))
    assert await claim(store, clock, "sha-2") is None  # its request died: taken over
    await keys.answer_idempotency_key(SCOPE, "k-1", status=200, content_type="application/json", body=b"[]")
    clock.advance(IDEMPOTENCY_KEEP_FOR + timedelta(seconds=1))
    assert await claim(store, clock, "sha-3") is None  # expired
    assert (await claim(store, clock, "sha-4")) == StoredAnswer("sha-3", None, None, None, clock.now())


async def test_concurrent_claims_have_one_winner(store: Store, clock: ManualClock) -> None:
    # Other keys first, so a pooled backend has a connection ready for each claim and the claims really overlap.
    await asyncio.gather(*(claim(store, clock, key=f"other-{n}") for n in range(8)))
    answers = await asyncio.gather(*(claim(store, clock, f"sha-{n}") for n in range(8)))
    winners = [n for n, answer in enumerate(answers) if answer is None]
    assert len(winners) == 1
    assert {a.body_sha256 for a in answers if a is not None} == {f"sha-{winners[0]}"}


async def test_pruning_removes_old_keys_in_batches(store: Store, clock: ManualClock) -> None:
    keys = idempotency_store_of(store)
    for n in range(3):
        await keys.claim_idempotency_key(
            SCOPE, f"k-{n}", "sha", now=clock.now(), expires_before=clock.now(), stale_before=clock.now()
        )
    clock.advance(IDEMPOTENCY_KEEP_FOR)
    assert await keys.prune_idempotency_keys(older_than=clock.now(), limit=2) == 2
    assert await keys.prune_idempotency_keys(older_than=clock.now(), limit=2) == 1
    assert await keys.prune_idempotency_keys(older_than=clock.now(), limit=2) == 0
