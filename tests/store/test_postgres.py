"""PostgreSQL-only checks: commit order equals seq order (the append lock), subscriptions created during an append,
matcher caches of other processes, seqs never reused after pruning, NOTIFY between processes.

Skipped unless the `store` fixture is a `PostgresStore` (EVENTBUS_TEST_STORE=postgresql).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from eventbus.clock import ManualClock
from eventbus.store.base import EventQuery, StartPosition, Store
from eventbus.store.postgres import PostgresStore
from eventbus.store.postgres.access import APPEND_LOCK
from eventbus.store.postgres.core import parse_url
from eventbus.store.postgres.pg_events import append_in
from tests.conftest import store_url
from tests.store.support import DEDUP_WINDOW, append, group_spec, lease, order, run_backfill, subscribe


@pytest.fixture
def pg(store: Store) -> PostgresStore:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL-only check")
    return store


@pytest.fixture
async def raw(pg: PostgresStore, tmp_path: Path) -> AsyncIterator[list[asyncpg.Connection]]:
    """Plain connections to the test's schema, for transactions a test holds open; closed at the end."""
    dsn, schema, _ = parse_url(store_url(tmp_path))
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
        opened.append(conn)
        return conn

    for _ in range(2):
        await connect()
    yield opened
    for conn in opened:
        await conn.close()


async def _wait_for_append_lock_waiter(conn: asyncpg.Connection, pid: int | None = None) -> None:
    """Until a backend (`pid`, else any: the store's pool) waits for APPEND_LOCK (synchronised on the server's lock
    table, not on a sleep)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1 "
            "AND ($2::int IS NULL OR pid = $2)",
            APPEND_LOCK,
            pid,
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody waited for the append lock")


async def _visible_seqs(store: Store) -> list[int]:
    """Every seq a reader paging by seq sees now."""
    seen: list[int] = []
    after = 0
    while page := await store.list_events(EventQuery(after_seq=after, limit=2)):
        seen += [e.seq for e in page]
        after = page[-1].seq
    return seen


async def test_a_seq_allocated_early_and_committed_late_is_never_skipped(
    pg: PostgresStore, clock: ManualClock, raw: list[asyncpg.Connection]
) -> None:
    await append(pg, clock, order("o-0"))  # seq 1, committed
    first_conn, second_conn = raw
    first = first_conn.transaction()
    await first.start()
    (early,) = (await append_in(first_conn, [order("o-1")], now=clock.now(), not_before=None, window=DEDUP_WINDOW))[0]
    assert early.seq == 2

    second = second_conn.transaction()
    await second.start()
    late_task = asyncio.create_task(
        append_in(second_conn, [order("o-2")], now=clock.now(), not_before=None, window=DEDUP_WINDOW)
    )
    await _wait_for_append_lock_waiter(first_conn, second_conn.get_server_pid())
    # The second append waits for the first to commit: it has no seq yet, and a reader sees only seq 1.
    assert not late_task.done()
    assert await _visible_seqs(pg) == [1]

    await first.commit()
    (late,) = (await late_task)[0]
    assert late.seq == 3
    assert await _visible_seqs(pg) == [1, 2]  # seq 3 allocated, not committed: the reader's page ends at 2

    await second.commit()
    assert await _visible_seqs(pg) == [1, 2, 3]
    assert [e.event.id for e in await pg.list_events(EventQuery())] == ["o-0", "o-1", "o-2"]


async def test_an_append_waits_while_an_earlier_seq_is_uncommitted(
    pg: PostgresStore, clock: ManualClock, raw: list[asyncpg.Connection]
) -> None:
    holder = raw[0]
    held = holder.transaction()
    await held.start()
    (early,) = (await append_in(holder, [order("o-1")], now=clock.now(), not_before=None, window=DEDUP_WINDOW))[0]
    later = asyncio.create_task(append(pg, clock, order("o-2")))
    await _wait_for_append_lock_waiter(raw[1])
    assert not later.done()  # not committed either: it has not even been given a seq
    assert await pg.last_seq() == 0
    assert await pg.list_events(EventQuery()) == []

    await held.commit()
    (late,) = await later
    assert (early.seq, late.seq) == (1, 2)
    assert [e.seq for e in await pg.list_events(EventQuery())] == [1, 2]


async def test_a_subscription_created_during_an_append_gets_its_event(
    pg: PostgresStore, clock: ManualClock, raw: list[asyncpg.Connection]
) -> None:
    holder = raw[0]
    held = holder.transaction()
    await held.start()
    await append_in(holder, [order("o-1")], now=clock.now(), not_before=None, window=DEDUP_WINDOW)
    creating = asyncio.create_task(
        pg.create_subscription(group_spec(), start=StartPosition("earliest"), now=clock.now())
    )
    await _wait_for_append_lock_waiter(raw[1])
    await held.commit()
    subscription, created = await creating
    assert created and subscription.backfilling  # it saw the committed event as part of the log's end
    await run_backfill(pg, clock, subscription.id)
    assert [d.event.event.id for d in await lease(pg, clock, subscription.id)] == ["o-1"]


async def test_another_process_sees_a_new_subscription_at_its_next_append(
    pg: PostgresStore, clock: ManualClock, tmp_path: Path
) -> None:
    other = PostgresStore(store_url(tmp_path))
    await other.open()
    try:
        await append(pg, clock, order("o-1"))  # this process's matchers: none
        subscription = await subscribe(other, clock)  # created by the other process
        await append(pg, clock, order("o-2"))
        assert [d.event.event.id for d in await lease(pg, clock, subscription.id)] == ["o-2"]
        await other.delete_subscription(subscription.id, now=clock.now())
        other_sub = await subscribe(pg, clock, group_spec(name="shipping"))
        await append(other, clock, order("o-3"))
        assert [d.event.event.id for d in await lease(other, clock, other_sub.id)] == ["o-3"]
        assert (await pg.subscription_stats(subscription.id)).pending == 0
    finally:
        await other.close()


async def test_seqs_are_never_reused_after_pruning(pg: PostgresStore, clock: ManualClock) -> None:
    outcomes = await append(pg, clock, order("o-1"), order("o-2"))
    clock.advance(timedelta(days=30))
    while await pg.prune(older_than=clock.now() - timedelta(days=7), limit=100):
        pass
    assert await pg.list_events(EventQuery()) == []
    (after,) = await append(pg, clock, order("o-3"))
    assert after.seq == outcomes[-1].seq + 1


async def test_an_append_in_one_process_wakes_waiters_in_another(
    pg: PostgresStore, clock: ManualClock, tmp_path: Path
) -> None:
    subscription = await subscribe(pg, clock)
    other = PostgresStore(store_url(tmp_path))
    await other.open()
    try:
        waiter = pg.wakeups.register(subscription.id)
        deadline = time.monotonic() + 10
        n = 0
        # The listener connects in the background after open: publish until a NOTIFY gets through.
        while not waiter.is_set() and time.monotonic() < deadline:
            n += 1
            await append(other, clock, order(f"o-{n}"))
            try:
                await asyncio.wait_for(waiter.wait(), 0.2)
            except TimeoutError:
                continue
        assert waiter.is_set()
    finally:
        await other.close()
