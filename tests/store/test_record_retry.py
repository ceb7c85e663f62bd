"""An attempt whose record finds the store unreachable is recorded once the store is back, while its lease lasts
(`eventbus.bus.settlement.record_while_leased`): a send made during a database restart is not sent a second time
after its lease runs out.

The store is made unreachable for real: a PostgreSQL store with a pool of one connection, held by an append that
waits for the append lock another connection holds, so every other operation is refused after `acquire_timeout`.
PostgreSQL only (EVENTBUS_TEST_STORE=postgresql).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from eventbus.bus.health import system_events
from eventbus.bus.settlement import record_while_leased
from eventbus.clock import ManualClock
from eventbus.errors import UnavailableError
from eventbus.store.base import Store
from eventbus.store.postgres import PostgresStore
from eventbus.store.postgres.access import APPEND_LOCK
from eventbus.store.postgres.core import parse_url
from eventbus.store.records import DeliveryQuery
from tests.conftest import store_url
from tests.store.support import append, lease, order, subscribe
from tests.store.test_contract_attempts import POLICY, endpoint_spec, succeeded

ACQUIRE_TIMEOUT = 0.2


@pytest.fixture
async def small(store: Store, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL-only check: it exhausts a connection pool")
    opened = PostgresStore(f"{store_url(tmp_path)}&pool=1&acquire_timeout={ACQUIRE_TIMEOUT}")
    await opened.open()
    yield opened
    await opened.close()


async def _unreachable(
    small: PostgresStore, clock: ManualClock, tmp_path: Path
) -> tuple[asyncpg.Connection, tuple[asyncpg.transaction.Transaction, asyncio.Task[object]]]:
    """Hold the append lock from outside and let the pool's one connection wait for it inside an append."""
    dsn, schema, _ = parse_url(store_url(tmp_path))
    holder = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    stuck = asyncio.create_task(append(small, clock, order(f"stuck-{uuid.uuid4().hex[:6]}")))
    for _ in range(1000):  # until the pool's connection waits for the lock (the server's lock table, not a sleep)
        if await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1", APPEND_LOCK
        ):
            break
        await asyncio.sleep(0.01)
    with pytest.raises(UnavailableError, match="no database connection"):
        await small.ping()
    return holder, (held, stuck)


async def test_a_record_refused_while_the_store_is_unreachable_lands_once_it_is_back(
    small: PostgresStore, clock: ManualClock, tmp_path: Path
) -> None:
    endpoint = await subscribe(small, clock, endpoint_spec())
    await append(small, clock, order("o-1"))
    (delivery,) = await lease(small, clock, endpoint.id)
    holder, (held, stuck) = await _unreachable(small, clock, tmp_path)
    released = False
    try:
        recording = asyncio.create_task(
            record_while_leased(
                small,
                succeeded(delivery, clock),
                policy=POLICY,
                now=clock.now(),
                lease_left=timedelta(seconds=30),
                system_events=system_events,
            )
        )
        # Each try is refused after 0.2 s; without trying again the record would have failed by now.
        done, _ = await asyncio.wait({recording}, timeout=5 * ACQUIRE_TIMEOUT)
        assert not done, recording.result() if not recording.cancelled() else "cancelled"
        await held.rollback()  # the store is reachable again
        released = True
        applied, _ = await asyncio.wait_for(recording, 10)
        await stuck
    finally:
        if not released:
            await held.rollback()
        await holder.close()
    assert applied
    rows = await small.list_deliveries(DeliveryQuery(subscription_id=endpoint.id))
    (row,) = [r for r in rows if r.delivery_id == delivery.delivery_id]
    assert (row.state, row.attempts) == ("succeeded", 1)


async def test_a_record_whose_lease_has_run_out_is_not_tried_again(
    small: PostgresStore, clock: ManualClock, tmp_path: Path
) -> None:
    endpoint = await subscribe(small, clock, endpoint_spec())
    await append(small, clock, order("o-1"))
    (delivery,) = await lease(small, clock, endpoint.id)
    holder, (held, stuck) = await _unreachable(small, clock, tmp_path)
    try:
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(
                record_while_leased(
                    small,
                    succeeded(delivery, clock),
                    policy=POLICY,
                    now=clock.now(),
                    lease_left=timedelta(0),  # what the dispatcher passes when shutting down
                    system_events=system_events,
                ),
                5,
            )
    finally:
        await held.rollback()
        await holder.close()
        await stuck
