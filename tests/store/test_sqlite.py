"""SQLite-only checks (DESIGN.md §4): PRAGMAs, group commit, migrations at reopen, the lock file, dead reasons.

Skipped unless the `store` fixture is a `SQLiteStore`; the backend-neutral contract lives in test_contract_*.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import pytest

from eventbus.clock import ManualClock
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.store import sqlite as sqlite_module
from eventbus.store.base import DeadReason, EventQuery, Settle, Settlement, Store
from eventbus.store.sqlite import SQLiteStore
from tests.store.support import LEASE_FOR, append, group_spec, lease, order, subscribe


@pytest.fixture
def sqlite(store: Store) -> SQLiteStore:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite-only check")
    return store


async def _pragma(store: SQLiteStore, name: str, *, writer: bool) -> object:
    def query(conn: sqlite3.Connection) -> object:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    return await (store._write(query) if writer else store._read(query))


async def _dead_reasons(store: SQLiteStore, subscription_id: str) -> list[str]:
    sql = "SELECT dead_reason FROM deliveries WHERE subscription_id = ? AND state = 'dead' ORDER BY event_seq"
    rows = await store._read(lambda c: c.execute(sql, (subscription_id,)).fetchall())
    return [row[0] for row in rows]


async def test_pragmas(sqlite: SQLiteStore) -> None:
    for writer in (True, False):
        assert str(await _pragma(sqlite, "journal_mode", writer=writer)).lower() == "wal"
        assert await _pragma(sqlite, "synchronous", writer=writer) == 2  # FULL: a 2xx survives power loss
        assert await _pragma(sqlite, "auto_vacuum", writer=writer) == 2  # INCREMENTAL, from the first migration
    assert await _pragma(sqlite, "query_only", writer=False) == 1  # readers cannot write behind the writer


async def test_concurrent_appends_share_commits(sqlite: SQLiteStore, clock: ManualClock) -> None:
    commits, operations = sqlite._writer.commits, sqlite._writer.operations

    results = await asyncio.gather(*(append(sqlite, clock, order(f"o-{n}")) for n in range(200)))

    new_commits = sqlite._writer.commits - commits
    new_operations = sqlite._writer.operations - operations
    assert new_operations == 200
    assert 1 <= new_commits < new_operations  # group commit: many appends, fewer fsyncs
    assert len({r[0].seq for r in results}) == 200
    assert len(await sqlite.list_events(EventQuery(limit=1000))) == 200


async def test_a_failing_write_fails_alone_in_its_batch(sqlite: SQLiteStore, clock: ManualClock) -> None:
    unstorable = Event(id="bad", source="/shop", type="order.paid", extensions={"bad": object()})  # type: ignore[dict-item]
    calls = [append(sqlite, clock, order(f"o-{n}")) for n in range(20)]
    calls.insert(10, append(sqlite, clock, order("partner"), unstorable))

    results = await asyncio.gather(*calls, return_exceptions=True)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and results[10] is failures[0]
    assert len(await sqlite.list_events(EventQuery())) == 20
    assert await sqlite.find_event("/shop", "partner") is None


async def test_reopen_runs_no_migration_and_keeps_data(
    sqlite: SQLiteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (outcome,) = await append(sqlite, clock, order("o-1"))
    subscription = await subscribe(sqlite, clock)
    versions = await sqlite._read(lambda c: c.execute("SELECT version, name FROM schema_migrations").fetchall())
    assert versions and versions[0] == (1, "initial")
    await sqlite.close()

    applied: list[str] = []
    real_split = sqlite_module._split_sql

    def spy(script: str) -> list[str]:
        applied.append(script)
        return real_split(script)

    monkeypatch.setattr(sqlite_module, "_split_sql", spy)
    reopened = SQLiteStore(sqlite.path)
    await reopened.open()
    try:
        assert applied == []
        again = await reopened._read(lambda c: c.execute("SELECT version, name FROM schema_migrations").fetchall())
        assert again == versions
        stored = await reopened.get_event(outcome.event_id)
        assert stored is not None and stored.event == order("o-1")
        assert await reopened.get_subscription(subscription.id) == subscription
    finally:
        await reopened.close()

    fresh = SQLiteStore(sqlite.path.parent / "fresh.db")
    await fresh.open()
    await fresh.close()
    assert len(applied) == len(versions)  # the spy does see migrations on a new file


async def test_a_second_store_on_the_same_file_is_refused(sqlite: SQLiteStore) -> None:
    second = SQLiteStore(sqlite.path)
    with pytest.raises(UnavailableError, match="in use"):
        await second.open()
    await sqlite.ping()  # the first one is unaffected


async def test_reopen_releases_leases_of_the_previous_process(sqlite: SQLiteStore, clock: ManualClock) -> None:
    subscription = await subscribe(sqlite, clock)
    await append(sqlite, clock, order("o-1"))
    await lease(sqlite, clock, subscription.id)
    await sqlite.close()

    reopened = SQLiteStore(sqlite.path)
    await reopened.open()
    try:
        stats = await reopened.subscription_stats(subscription.id)
        assert (stats.pending, stats.leased) == (1, 0)
    finally:
        await reopened.close()


async def test_dead_reasons_are_recorded(sqlite: SQLiteStore, clock: ManualClock) -> None:
    one_try = await subscribe(sqlite, clock, group_spec("one-try", retry_schedule=()))
    short_lived = await subscribe(sqlite, clock, group_spec("short", max_pending_age=timedelta(minutes=1)))
    settled = await subscribe(sqlite, clock, group_spec("settled"))
    await append(sqlite, clock, order("o-1"), order("o-2"))

    await lease(sqlite, clock, one_try.id)
    a, b = await lease(sqlite, clock, settled.id)
    dropped = Settle(a.delivery_id, a.lease_token, Settlement.DEAD)  # no reason given
    rejected = Settle(b.delivery_id, b.lease_token, Settlement.DEAD, reason=DeadReason.REJECTED, error="422")
    await sqlite.settle_deliveries([dropped, rejected], now=clock.now())
    clock.advance(LEASE_FOR + timedelta(minutes=1))
    assert await lease(sqlite, clock, one_try.id) == []
    assert await lease(sqlite, clock, short_lived.id) == []

    assert await _dead_reasons(sqlite, one_try.id) == ["exhausted", "exhausted"]
    assert await _dead_reasons(sqlite, short_lived.id) == ["expired", "expired"]
    assert await _dead_reasons(sqlite, settled.id) == ["dropped", "rejected"]


async def test_seq_allocation_survives_a_missing_autoincrement_counter(store: Store, clock: ManualClock) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite only")
    (first,) = await append(store, clock, order("a"))
    await store._writer.submit(lambda conn: conn.execute("DELETE FROM sqlite_sequence"))
    (second,) = await append(store, clock, order("b"))
    assert second.seq > first.seq


async def test_a_stored_filter_that_no_longer_compiles_does_not_stop_publishing(
    store: Store, clock: ManualClock
) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("SQLite only")
    subscription = await subscribe(store, clock, group_spec("old", ("**",), filter_json='{"subject": "x"}'))
    # As if written by a version whose regex engine accepted lookahead.
    await store._writer.submit(
        lambda conn: conn.execute(
            "UPDATE subscriptions SET filter = ? WHERE id = ?", ('{"subject": {"$regex": "(?=x)"}}', subscription.id)
        )
    )
    store._cache.invalidate()
    (outcome,) = await append(store, clock, order("c"))
    assert outcome.duplicate is False
