"""Appends of one process share PostgreSQL transactions (`eventbus/store/postgres/pg_batch.py`): calls queued while
an append transaction runs go in the next one together, in arrival order, with dedup across them; a call the
database refuses fails alone; an unreachable store fails every call of the batch and none succeeds.

The first test needs the PostgreSQL store (EVENTBUS_TEST_STORE=postgresql); the batcher's own rules are checked with
a plain function standing in for the transaction, on either backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from eventbus.clock import ManualClock
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.store.base import AppendOutcome, EventQuery, Store
from eventbus.store.postgres import PostgresStore
from eventbus.store.postgres.access import APPEND_LOCK
from eventbus.store.postgres.core import parse_url
from eventbus.store.postgres.pg_batch import AppendBatcher
from tests.conftest import store_url
from tests.store.support import DEDUP_WINDOW, append, group_spec, lease, order, seqs, subscribe


async def _until_waiting_for_append_lock(conn: asyncpg.Connection) -> None:
    """Until a backend of the store's pool waits for the append lock (the server's lock table, not a sleep)."""
    for _ in range(1000):
        if await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1", APPEND_LOCK
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no append waited for the lock")


async def test_calls_queued_behind_a_transaction_share_the_next_one_in_arrival_order(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL-only check: the SQLite writer has its own group commit")
    group = await subscribe(store, clock, group_spec())
    dsn, schema, _ = parse_url(store_url(tmp_path))
    holder = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
    try:
        # Another process's append holds the lock: this process's first call waits in its transaction.
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        first = asyncio.create_task(append(store, clock, order("o-0")))
        await _until_waiting_for_append_lock(holder)
        # Thirty calls arrive meanwhile, one of them a duplicate of another's event.
        later = [asyncio.create_task(append(store, clock, order(f"o-{n}"))) for n in range(1, 30)]
        later.append(asyncio.create_task(append(store, clock, order("o-7"))))
        await asyncio.sleep(0)  # every call reaches the queue (they do no I/O before it)
        assert not first.done()
        await hold.rollback()
        outcomes = [await first] + [await task for task in later]
    finally:
        await holder.close()

    assert [len(o) for o in outcomes] == [1] * 31
    flat = [o[0] for o in outcomes]
    assert [o.seq for o in flat[:30]] == list(range(1, 31)), "seqs follow the calls' arrival order"
    assert flat[30] == AppendOutcome(flat[7].event_id, flat[7].seq, duplicate=True), "dedup across shared calls"
    assert store._appends is not None and store._appends.transactions == 2, "one for the first, one for the rest"
    stored = await store.list_events(EventQuery(after_seq=0, limit=100))
    assert [e.event.id for e in stored] == [f"o-{n}" for n in range(30)]
    assert sorted(seqs(await lease(store, clock, group.id))) == list(range(1, 31)), "every event fanned out once"


class Transactions:
    """Stands in for the store's append transaction: records each batch, fails as told."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.refuse: set[str] = set()
        self.unreachable = False

    async def run(
        self, events: Sequence[Event], now: datetime, not_before: datetime | None, window: timedelta
    ) -> list[AppendOutcome]:
        self.batches.append([e.id for e in events])
        await self.gate.wait()
        if self.unreachable:
            raise UnavailableError("store unavailable: connection refused")
        if self.refuse & {e.id for e in events}:
            raise ValueError("refused by the database")
        return [AppendOutcome(f"evt-{e.id}", len(self.batches), duplicate=False) for e in events]


async def _queued(batcher: AppendBatcher, clock: ManualClock, *names: str) -> list[asyncio.Task[list[AppendOutcome]]]:
    tasks = [
        asyncio.create_task(batcher.append([order(n)], now=clock.now(), not_before=None, window=DEDUP_WINDOW))
        for n in names
    ]
    await asyncio.sleep(0)
    return tasks


async def test_a_refused_call_fails_alone_and_the_others_of_its_batch_succeed(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    first = await _queued(batcher, clock, "a")
    rest = await _queued(batcher, clock, "b", "bad", "c")
    transactions.refuse = {"bad"}
    transactions.gate.set()
    assert (await first[0])[0].event_id == "evt-a"
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert [r[0].event_id if isinstance(r, list) else type(r) for r in results] == ["evt-b", ValueError, "evt-c"]
    assert transactions.batches == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]


async def test_an_unreachable_store_fails_every_call_of_the_batch(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    tasks = await _queued(batcher, clock, "a", "b", "c")
    transactions.unreachable = True
    transactions.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, UnavailableError) for r in results)
    assert transactions.batches == [["a", "b", "c"]], "no call is retried alone: none may look stored"


async def test_calls_with_other_options_keep_their_place_in_line(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    later = clock.now() + timedelta(hours=1)
    tasks = await _queued(batcher, clock, "a", "b")
    tasks.append(
        asyncio.create_task(batcher.append([order("delayed")], now=clock.now(), not_before=later, window=DEDUP_WINDOW))
    )
    tasks += await _queued(batcher, clock, "c")
    transactions.gate.set()
    await asyncio.gather(*tasks)
    assert transactions.batches == [["a", "b"], ["delayed"], ["c"]]


async def test_a_cancelled_caller_leaves_its_batch_to_finish(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    first, second = await _queued(batcher, clock, "a", "b")
    first.cancel()
    transactions.gate.set()
    assert (await second)[0].event_id == "evt-b"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert transactions.batches == [["a", "b"]], "the cancelled call's transaction still ran to its end"
    await batcher.close()


async def test_a_caller_cancelled_while_queued_stores_nothing(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    (running,) = await _queued(batcher, clock, "a")
    await asyncio.sleep(0)  # "a" is in its transaction, waiting at the gate
    queued, kept = await _queued(batcher, clock, "gone", "b")
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    transactions.gate.set()
    assert [(await running)[0].event_id, (await kept)[0].event_id] == ["evt-a", "evt-b"]
    assert transactions.batches == [["a"], ["b"]], "the cancelled call never reached a transaction"


async def test_close_waits_for_queued_appends_and_refuses_new_ones(clock: ManualClock) -> None:
    transactions = Transactions()
    batcher = AppendBatcher(transactions.run)
    tasks = await _queued(batcher, clock, "a", "b")
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0)
    with pytest.raises(UnavailableError, match="closed"):
        await batcher.append([order("late")], now=clock.now(), not_before=None, window=DEDUP_WINDOW)
    assert not closing.done()
    transactions.gate.set()
    await closing
    assert [(await t)[0].event_id for t in tasks] == ["evt-a", "evt-b"]
