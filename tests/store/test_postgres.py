"""PostgreSQL-only checks: commit order equals seq order (the append lock), subscriptions created during an append,
matcher caches of other processes, seqs never reused after pruning, NOTIFY between processes, polling when a NOTIFY
is lost, a stalled append lock holder ended by the server, the pool's acquire timeout.

Those are skipped unless the `store` fixture is a `PostgresStore` (EVENTBUS_TEST_STORE=postgresql); the checks of
the store URL's parameters and of a missing asyncpg run on either backend.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from eventbus.bus.service import Bus
from eventbus.bus.session import GroupSession
from eventbus.clock import ManualClock
from eventbus.errors import InvalidArgumentError, UnavailableError
from eventbus.store import open_store
from eventbus.store.base import EventQuery, StartPosition, Store
from eventbus.store.postgres import PostgresStore
from eventbus.store.postgres.access import APPEND_LOCK
from eventbus.store.postgres.core import PgOptions, parse_options, parse_url
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


# -- server-side guards -----------------------------------------------------------------------------------------


async def test_a_stalled_append_lock_holder_is_ended_by_the_server(
    pg: PostgresStore, clock: ManualClock, tmp_path: Path
) -> None:
    # Another process, whose store ends sessions idle in a transaction after 0.5 s, takes the append lock mid-append
    # and stalls there (SIGSTOP, a network cut): every append of every process waits for that lock.
    stalled_store = PostgresStore(f"{store_url(tmp_path)}&idle_in_transaction_timeout=0.5")
    await stalled_store.open()
    locked, resume = asyncio.Event(), asyncio.Event()

    async def stalled_append() -> None:
        async with stalled_store._tx() as conn:
            await append_in(conn, [order("o-1")], now=clock.now(), not_before=None, window=DEDUP_WINDOW)
            locked.set()
            await resume.wait()  # idle in the transaction, holding the lock

    stalled = asyncio.create_task(stalled_append())
    try:
        await locked.wait()
        # Without the guard this append waits for the stalled process or for command_timeout (60 s).
        (outcome,) = await asyncio.wait_for(append(pg, clock, order("o-2")), 10)
        assert outcome.seq == 1  # the stalled append was rolled back: its seq is allocated again
        resume.set()
        with pytest.raises(UnavailableError):  # the stalled process, resumed, is told its append failed
            await stalled
        assert [e.event.id for e in await pg.list_events(EventQuery())] == ["o-2"]
    finally:
        resume.set()
        await asyncio.gather(stalled, return_exceptions=True)
        await stalled_store.close()


async def test_an_operation_finding_no_free_connection_is_answered_unavailable(
    pg: PostgresStore, clock: ManualClock, tmp_path: Path, raw: list[asyncpg.Connection]
) -> None:
    name = f"eventbus-test-{uuid.uuid4().hex[:12]}"  # finds the pool's one connection among the server's backends
    small = PostgresStore(f"{store_url(tmp_path)}&pool=1&acquire_timeout=0.2&application_name={name}")
    await small.open()
    pid = await raw[1].fetchval("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
    holder = raw[0]
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    finished = False
    try:
        # The pool's one connection waits for the append lock, inside this append.
        waiting = asyncio.create_task(append(small, clock, order("o-1")))
        await _wait_for_append_lock_waiter(raw[1], pid)
        with pytest.raises(UnavailableError, match=r"no database connection within 0\.2 s \(all 1 of the pool"):
            await asyncio.wait_for(small.last_seq(), 10)  # without a timeout: until the append ends
        with pytest.raises(UnavailableError, match="no database connection"):
            await asyncio.wait_for(small.ping(), 10)  # what /readyz asks
        await held.rollback()
        finished = True
        (outcome,) = await waiting
        assert outcome.seq == 1
        assert await small.last_seq() == 1  # the connection is free again
    finally:
        if not finished:
            await held.rollback()
        await small.close()


# -- polling is the truth ---------------------------------------------------------------------------------------


class WatchedClock(ManualClock):
    """A manual clock that tells when someone sleeps on it: a stream parked until its next poll."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()

    async def sleep_until(self, moment: datetime) -> None:
        if moment > self.now():
            self.sleeping.set()
        await super().sleep_until(moment)


async def test_a_stream_gets_an_event_at_its_next_poll_when_the_notify_is_lost(
    pg: PostgresStore, tmp_path: Path
) -> None:
    clock = WatchedClock()
    subscription = await subscribe(pg, clock)
    await pg._stop_listening()  # this process hears no NOTIFY from the other one
    other = PostgresStore(store_url(tmp_path))
    await other.open()
    bus = Bus(pg, clock=clock)
    session = GroupSession(bus, subscription, created=False, max_in_flight=10, ack_deadline=timedelta(seconds=30))
    try:
        batch = asyncio.create_task(session.next_batch())
        await asyncio.wait_for(clock.sleeping.wait(), 10)  # nothing to lease: parked until the poll
        await append(other, clock, order("o-1"))  # committed in the other process; its NOTIFY reaches nobody here
        assert not batch.done()
        clock.advance(bus.settings.poll_every)
        leased = await asyncio.wait_for(batch, 10)
        assert [d.event.event.id for d in leased] == ["o-1"]
    finally:
        await session.close()
        await other.close()


# -- the store URL --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("schema", ""),
        ("schema", "Billing"),
        ("schema", "1st"),
        ("schema", "a;drop"),
        ("schema", "a" * 64),
        ("pool", "0"),
        ("pool", "101"),
        ("pool", "ten"),
        ("pool", ""),
        ("acquire_timeout", "0"),
        ("acquire_timeout", "-1"),
        ("acquire_timeout", "10s"),
        ("acquire_timeout", "601"),
        ("acquire_timeout", "nan"),
        ("idle_in_transaction_timeout", "0.05"),
        ("idle_in_transaction_timeout", "30s"),
        ("idle_in_transaction_timeout", "86401"),
        ("idle_in_transaction_timeout", ""),
    ],
)
def test_a_bad_store_url_parameter_is_refused_naming_it(parameter: str, value: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        open_store(f"postgresql://eventbus@db.example:5432/events?{parameter}={value}")
    assert refused.value.message.startswith(f"store: {parameter}: ")
    assert [v.field for v in refused.value.violations] == ["store"]


def test_the_store_url_parameters_are_taken_off_the_connection_url() -> None:
    options = parse_options(
        "postgresql://eventbus@db.example:5432/events?schema=tenant_1&pool=3&sslmode=require"
        "&acquire_timeout=2.5&idle_in_transaction_timeout=0"
    )
    assert options == PgOptions("postgresql://eventbus@db.example:5432/events?sslmode=require", "tenant_1", 3, 2.5, 0)
    assert options.server_settings() == {"search_path": "tenant_1"}  # 0: not sent (poolers may refuse it)
    defaults = parse_options("postgresql://eventbus@db.example/events")
    assert (defaults.pool, defaults.acquire_timeout) == (10, 10.0)
    assert defaults.server_settings() == {"idle_in_transaction_session_timeout": "30000"}


def test_a_postgresql_store_without_asyncpg_is_a_one_line_usage_error(tmp_path: Path) -> None:
    # A Python where asyncpg cannot be imported (the `postgres` extra not installed).
    program = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "from eventbus.cli import main\n"
        "raise SystemExit(main(['serve', '--store', 'postgresql://eventbus@127.0.0.1:1/events',"
        " '--grpc-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "eventbus serve: store: postgresql:// needs asyncpg, which is not installed: pip install 'eventbus[postgres]'"
    )
