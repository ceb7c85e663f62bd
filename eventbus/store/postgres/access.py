"""What the PostgreSQL store's operation mixins share: the connection pool, transactions, and wake-ups.

Every operation is one transaction on a pooled connection (`_tx`), or one read (`_read`). Connection failures
become `UnavailableError` (503 / UNAVAILABLE): a caller never sees success for an uncommitted change. Appends
take a transaction-scoped advisory lock before allocating seqs, so commit order equals seq order and a reader
paging by seq never skips an event that was allocated early and committed late. Changes that a process must
see (new deliveries, changed subscriptions) are announced with NOTIFY in the same transaction: a hint; every
process still polls, which is the truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from eventbus.errors import UnavailableError
from eventbus.store.base import Wakeups

CHANNEL = "eventbus_wakeup"
APPEND_LOCK = 0x65766275  # pg_advisory_xact_lock key of appends ("evbu")
# Set (transaction-local) by `_subscriptions_changed`: an append in the same transaction must not cache matchers
# read from uncommitted subscriptions.
CHANGED_SETTING = "eventbus.subscriptions_changed"
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.DiskFullError,
    asyncpg.InsufficientResourcesError,
    # A connection lost mid-operation (the server crashed) can leave asyncpg's protocol in a state where the pool's
    # reset on release fails with "cannot switch to state ..., another operation is in progress" (crash harness).
    asyncpg.InternalClientError,
    # The server ended a session left idle in a transaction (idle_in_transaction_session_timeout): the process
    # stalled; its transaction was rolled back.
    asyncpg.IdleInTransactionSessionTimeoutError,
    ConnectionError,
    OSError,
)


class PgAccess:
    """Base of the operation mixins; `PostgresStore` provides the pool."""

    wakeups: Wakeups
    _pool: asyncpg.Pool | None
    _origin: str  # names this store instance in NOTIFY payloads
    _acquire_timeout: float  # seconds to wait for a pooled connection (the URL's ?acquire_timeout=)

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise UnavailableError("the store is closed")
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for at most `_acquire_timeout`: with every connection held (a burst, a
        stalled lock holder) a caller is answered UNAVAILABLE, retryable, instead of waiting without end."""
        pool = self._require_pool()
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError as exc:
            raise UnavailableError(
                f"store unavailable: no database connection within {self._acquire_timeout:g} s "
                f"(all {pool.get_max_size()} of the pool in use, or the server slow to accept one)"
            ) from exc
        except CONNECTION_ERRORS as exc:
            raise UnavailableError(f"store unavailable: {exc}") from exc
        try:
            yield cast(asyncpg.Connection, conn)  # a pool's proxy: every Connection method, forwarded
        finally:
            await pool.release(conn)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction (READ COMMITTED); committed when the block ends without an exception."""
        try:
            async with self._connection() as conn, conn.transaction():
                yield conn
        except CONNECTION_ERRORS as exc:
            raise UnavailableError(f"store unavailable: {exc}") from exc

    async def _read(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *args))
        except CONNECTION_ERRORS as exc:
            raise UnavailableError(f"store read failed: {exc}") from exc

    async def _read_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._read(sql, *args)
        return rows[0] if rows else None

    async def _announce(self, conn: asyncpg.Connection, subscription_ids: Iterable[str]) -> None:
        """Tell the other processes that these subscriptions have news (this one wakes its own waiters after the
        commit, at once: the payload names this store, whose listener skips it, so a late echo wakes nobody)."""
        ids = sorted(set(subscription_ids))
        for start in range(0, len(ids), 200):  # a NOTIFY payload is at most 8000 bytes
            payload = f"{self._origin} {','.join(ids[start : start + 200])}"
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    @staticmethod
    async def _subscriptions_changed(conn: asyncpg.Connection) -> None:
        """Call in every transaction that changes what fan-out matches (wherever the SQLite store calls
        `SubscriptionCache.invalidate()`): create, delete, seek, state, settings, replay.

        It waits for in-flight appends (APPEND_LOCK) and bumps `subscriptions_version`, so every process reloads its
        matchers. Call it after the transaction's row changes and before anything that reads the end of the log:
        APPEND_LOCK is the last lock a transaction takes (appends come last too), which keeps lock order acyclic.
        """
        await conn.execute(
            f"SELECT pg_advisory_xact_lock({APPEND_LOCK}); "
            "UPDATE subscriptions_version SET version = version + 1; "
            f"SELECT set_config('{CHANGED_SETTING}', '1', true)"
        )
