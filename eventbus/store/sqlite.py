"""The embedded store: one SQLite file in WAL mode, `synchronous=FULL`, written by one group-committing thread."""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

import structlog

from eventbus.clock import from_micros, to_micros
from eventbus.errors import UnavailableError
from eventbus.ids import new_id
from eventbus.model import Event, StoredEvent
from eventbus.store import sqlite_attempts as attempts
from eventbus.store import sqlite_deliveries as deliveries
from eventbus.store import sqlite_fanout as fanout
from eventbus.store import sqlite_subscriptions as subs
from eventbus.store.base import (
    AppendOutcome,
    EventQuery,
    LeasedDelivery,
    Settle,
    StartPosition,
    Subscription,
    SubscriptionSpec,
    SubscriptionStats,
    Wakeups,
)
from eventbus.store.migrations import load_migrations
from eventbus.store.records import (
    SystemEvents,
)
from eventbus.store.rows import EVENT_COLUMNS, event_from_row
from eventbus.store.space import ReclaimedSpace
from eventbus.store.sqlite_idempotency import IdempotencyOperations
from eventbus.store.sqlite_keys import KeyOperations
from eventbus.store.sqlite_managed import ManagedOperations
from eventbus.store.sqlite_push import PushOperations
from eventbus.store.sqlite_sources import SourceOperations
from eventbus.store.sqlite_space import (
    VACUUM_STEP_PAGES,
    WAL_SIZE_LIMIT,
    WAL_TRUNCATE_ABOVE,
    truncate_wal,
    vacuum_step,
)
from eventbus.store.sqlite_state import StateOperations
from eventbus.store.sqlite_types import TypeOperations
from eventbus.store.sqlite_writer import SQLiteWriter

T = TypeVar("T")
log = structlog.get_logger("eventbus.store")


class SQLiteStore(
    PushOperations,
    KeyOperations,
    SourceOperations,
    StateOperations,
    IdempotencyOperations,
    TypeOperations,
    ManagedOperations,
):
    """`Store` on one SQLite file. One server process per file (more processes: PostgreSQL)."""

    def __init__(self, path: str | Path, *, linger: float = 0.005, readers: int = 2) -> None:
        self.path = Path(path)
        self.wakeups = Wakeups()
        self._cache = fanout.SubscriptionCache()
        self._writer = SQLiteWriter(self._connect_writer, linger=linger, on_batch_failure=self._cache.invalidate)
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="eventbus-sqlite-reader")
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._checkpointer: asyncio.Task[None] | None = None
        self._open = False

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_exclusively(self.path)
        try:
            await asyncio.to_thread(self._migrate)
            await asyncio.to_thread(self._release_orphaned_leases)
        except BaseException:
            self._lock_file.close()
            raise
        self._writer.start()
        self._open = True
        self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoint_loop())

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
        await asyncio.to_thread(self._writer.stop)
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        self._lock_file.close()

    async def ping(self) -> None:
        """Ready means readable and writable: the writer thread runs and its last commit did not fail."""
        if not self._open:
            raise UnavailableError("the store is closed")
        if not self._writer.alive:
            raise UnavailableError("the store's writer has stopped")
        if self._writer.last_commit_error is not None:
            raise UnavailableError(f"the last commit failed: {self._writer.last_commit_error}")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        # Checkpoints run from a background task, off the commit path (an inline one costs the p99).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # A checkpointed WAL is reused from its start; past this size it is also cut back, so one burst of writes
        # does not leave a large file behind for good.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA cache_size = -32000")
        return conn

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            # Must precede the first table, or it can only be changed by a full VACUUM.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise UnavailableError(f"SQLite refused WAL mode (got {mode!r}) for {self.path}")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in load_migrations("sqlite"):
                if migration.version in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split_sql(migration.sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        (migration.version, migration.name),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                log.info("store_migrated", version=migration.version, name=migration.name)
        finally:
            conn.close()

    def _release_orphaned_leases(self) -> None:
        """Leases in the file belong to a process that is gone (one process per file, enforced by the lock):
        make those deliveries due now instead of waiting for their leases to run out."""
        conn = self._connect()
        try:
            stamp = to_micros(datetime.now(UTC))
            conn.execute("BEGIN IMMEDIATE")
            # A push delivery's attempt may have reached its destination before the crash: it counts, and the
            # log says so (consumer groups keep no attempt log).
            interrupted = conn.execute(
                "SELECT d.delivery_id, d.subscription_id, d.attempts, COALESCE(d.last_attempt_at, ?), d.manual "
                "FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id "
                "WHERE d.state = 'leased' AND s.kind != 'grpc'",
                (stamp,),
            ).fetchall()
            conn.executemany(
                f"INSERT INTO attempts ({attempts.ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, NULL, 'interrupted', "
                "'the server stopped during the attempt', NULL, NULL, 'retry', ?, 0, ?)",
                [(new_id("att"), d, sub, n, at, stamp, manual) for d, sub, n, at, manual in interrupted],
            )
            released = conn.execute(
                "UPDATE deliveries SET state = 'pending', lease_token = NULL, next_attempt_at = "
                "MIN(next_attempt_at, ?) WHERE state = 'leased'",
                (stamp,),
            ).rowcount
            conn.execute("COMMIT")
            if released:
                log.info("store_leases_released", deliveries=released)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._read(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            except Exception as exc:  # a failed checkpoint is retried next round; commits do not depend on it
                log.warning("store_checkpoint_failed", error=str(exc))

    # -- plumbing ------------------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._reader_lock:
                self._reader_connections.append(conn)
        return conn

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if not self._open:
            raise UnavailableError("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: query(self._reader()))
        except sqlite3.Error as exc:
            raise UnavailableError(f"store read failed: {exc}") from exc

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if not self._open:
            raise UnavailableError("the store is closed")
        return await self._writer.submit(op)

    # -- events --------------------------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[Event],
        *,
        now: datetime,
        not_before: datetime | None,
        dedup_window: timedelta,
        only_subscription: str | None = None,
    ) -> list[AppendOutcome]:
        outcomes, touched = await self._write(
            lambda conn: fanout.append(
                conn,
                self._cache,
                events,
                now=now,
                not_before=not_before,
                window=dedup_window,
                only_subscription=only_subscription,
            )
        )
        self.wakeups.notify(touched)
        return outcomes

    async def get_event(self, event_id: str) -> StoredEvent | None:
        row = await self._read(
            lambda c: c.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?", (event_id,)).fetchone()
        )
        return event_from_row(row) if row else None

    async def find_event(self, source: str, id: str) -> StoredEvent | None:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE source = ? AND id = ? ORDER BY seq DESC LIMIT 1"
        row = await self._read(lambda c: c.execute(sql, (source, id)).fetchone())
        return event_from_row(row) if row else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        clauses: list[str] = ["seq > ?"]
        params: list[object] = [query.after_seq]
        for column, value in (("source", query.source), ("subject", query.subject)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.received_after is not None:
            clauses.append("received_at >= ?")
            params.append(to_micros(query.received_after))
        if query.received_before is not None:
            clauses.append("received_at < ?")
            params.append(to_micros(query.received_before))
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
        params.append(query.limit)
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [event_from_row(row) for row in rows]

    async def last_seq(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone())
        return int(row[0])

    # -- subscriptions -------------------------------------------------------------------------------------

    async def create_subscription(
        self, spec: SubscriptionSpec, *, start: StartPosition, now: datetime
    ) -> tuple[Subscription, bool]:
        return await self._write(lambda conn: subs.create_subscription(conn, self._cache, spec, start=start, now=now))

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        sql = f"SELECT {subs.SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ? AND state != 'deleted'"
        row = await self._read(lambda c: c.execute(sql, (subscription_id,)).fetchone())
        return subs.subscription_from_row(row) if row else None

    async def find_subscription(self, kind: str, name: str) -> Subscription | None:
        sql = (
            f"SELECT {subs.SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE kind = ? AND name = ? AND state != 'deleted'"
        )
        row = await self._read(lambda c: c.execute(sql, (kind, name)).fetchone())
        return subs.subscription_from_row(row) if row else None

    async def list_subscriptions(self, kind: str | None, *, after_id: str, limit: int) -> list[Subscription]:
        sql = (
            f"SELECT {subs.SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE (kind = ? OR (? IS NULL AND kind != 'grpc')) AND id > ? AND state != 'deleted' ORDER BY id LIMIT ?"
        )
        rows = await self._read(lambda c: c.execute(sql, (kind, kind, after_id, limit)).fetchall())
        return [subs.subscription_from_row(row) for row in rows]

    async def delete_subscription(
        self, subscription_id: str, *, now: datetime, idle_before: datetime | None = None
    ) -> bool:
        deleted = await self._write(
            lambda conn: subs.delete_subscription(conn, self._cache, subscription_id, now=now, idle_before=idle_before)
        )
        if deleted:
            self.wakeups.notify([subscription_id])
        return deleted

    async def purge_deleted(self, *, limit: int) -> int:
        return await self._write(lambda conn: subs.purge_deleted(conn, limit=limit))

    async def backfill(self, subscription_id: str, *, now: datetime, limit: int) -> bool:
        more, touched = await self._write(
            lambda conn: subs.backfill(conn, self._cache, subscription_id, now=now, limit=limit)
        )
        if touched:
            self.wakeups.notify([subscription_id])
        return more

    async def pending_backfills(self) -> list[str]:
        sql = "SELECT id FROM subscriptions WHERE backfill_next_seq IS NOT NULL AND state != 'deleted'"
        rows = await self._read(lambda c: c.execute(sql).fetchall())
        return [row[0] for row in rows]

    async def seek_subscription(self, subscription_id: str, *, start: StartPosition, now: datetime) -> None:
        await self._write(lambda conn: subs.seek_subscription(conn, self._cache, subscription_id, start=start, now=now))
        self.wakeups.notify([subscription_id])

    async def touch_subscriptions(self, subscription_ids: Sequence[str], *, now: datetime) -> None:
        if subscription_ids:
            stamp = to_micros(now)
            await self._write(
                lambda c: c.executemany(
                    "UPDATE subscriptions SET last_active_at = ? WHERE id = ?", [(stamp, i) for i in subscription_ids]
                )
            )

    async def idle_subscriptions(self, kind: str, *, ephemeral_before: datetime, durable_before: datetime) -> list[str]:
        sql = (
            "SELECT id FROM subscriptions WHERE kind = ? AND state != 'deleted' AND "
            "((ephemeral = 1 AND last_active_at < ?) OR (ephemeral = 0 AND last_active_at < ?))"
        )
        params = (kind, to_micros(ephemeral_before), to_micros(durable_before))
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [row[0] for row in rows]

    # -- deliveries ----------------------------------------------------------------------------------------

    async def lease_deliveries(
        self,
        subscription_id: str,
        *,
        limit: int,
        lease_for: timedelta,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[LeasedDelivery]:
        def lease(conn: sqlite3.Connection) -> tuple[list[LeasedDelivery], set[str]]:
            leased, died = deliveries.lease_deliveries(conn, subscription_id, limit=limit, lease_for=lease_for, now=now)
            changes = attempts.dead_changes(conn, subscription_id, died, now) if system_events else []
            return leased, attempts.append_system_events(conn, self._cache, changes, system_events, now=now)

        leased, touched = await self._write(lease)
        self.wakeups.notify(touched)
        return leased

    async def settle_deliveries(self, settles: Sequence[Settle], *, now: datetime) -> list[bool]:
        if not settles:
            return []
        results, touched = await self._write(lambda conn: deliveries.settle_deliveries(conn, settles, now=now))
        self.wakeups.notify(touched)
        return results

    async def extend_leases(self, leases: Sequence[tuple[str, int]], *, until: datetime) -> list[bool]:
        if not leases:
            return []
        stamp = to_micros(until)

        def extend(conn: sqlite3.Connection) -> list[bool]:
            sql = (
                "UPDATE deliveries SET next_attempt_at = ? "
                "WHERE delivery_id = ? AND state = 'leased' AND lease_token = ?"
            )
            return [conn.execute(sql, (stamp, d, t)).rowcount == 1 for d, t in leases]

        return await self._write(extend)

    async def release_leases(self, leases: Sequence[tuple[str, int]], *, now: datetime, unsent: bool = False) -> int:
        if not leases:
            return 0
        released, touched = await self._write(
            lambda conn: deliveries.release_leases(conn, leases, now=now, unsent=unsent)
        )
        self.wakeups.notify(touched)
        return released

    async def next_due_at(self, subscription_id: str) -> datetime | None:
        sql = (
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE subscription_id = ? AND state IN ('pending', 'leased') "
            f"AND blocked = 0 AND event_seq < COALESCE({subs.BACKLOG_END_SQL}, {subs.NO_BACKLOG})"
        )
        row = await self._read(lambda c: c.execute(sql, (subscription_id, subscription_id)).fetchone())
        return from_micros(row[0]) if row and row[0] is not None else None

    async def subscription_stats(self, subscription_id: str) -> SubscriptionStats:
        return await self._read(lambda c: deliveries.subscription_stats(c, subscription_id))

    async def prune(self, *, older_than: datetime, limit: int) -> int:
        # The pages it frees go back to the file system in `reclaim_space`, after the whole retention round.
        return await self._write(lambda conn: deliveries.prune(conn, older_than=older_than, limit=limit))

    async def reclaim_space(self, *, max_pages: int) -> ReclaimedSpace:
        """`SpaceReclaimer`: free pages back to the file system a step at a time (each step one writer operation,
        so publishes go in between), then the WAL checkpointed and truncated."""
        returned, left = 0, 1
        while left and returned < max_pages:
            step = min(VACUUM_STEP_PAGES, max_pages - returned)
            done, left = await self._write(partial(vacuum_step, pages=step))
            returned += done
            if not done:
                break
        truncated = await asyncio.to_thread(truncate_wal, self.path, above=WAL_TRUNCATE_ABOVE)
        if returned:
            log.info("store_space_reclaimed", pages=returned, free_pages_left=left, wal_truncated=truncated)
        return ReclaimedSpace(pages_returned=returned, free_pages_left=left, wal_truncated=truncated)


def _lock_exclusively(path: Path) -> IO[bytes]:
    """Hold `<db>.lock` for the process's life: a second server on the same file fails fast, with a reason."""
    handle = open(f"{path}.lock", "ab")  # noqa: SIM115 (held open until close())
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UnavailableError(
            f"{path} is in use by another eventbus process (one process per SQLite file; use PostgreSQL for more)"
        ) from None
    return handle


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file (no statement in them contains a `;` inside a string)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
