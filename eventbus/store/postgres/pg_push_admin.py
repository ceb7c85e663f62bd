"""PostgreSQL operator actions: delivery reads, subscription state and settings, resend, recover, replay."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import asyncpg

from eventbus.clock import to_micros
from eventbus.errors import ConcurrentUpdateError, FailedPreconditionError, NotFoundError, UnavailableError
from eventbus.store.base import Ordering, SubscriptionState
from eventbus.store.health_rules import HEALTH_RESET
from eventbus.store.postgres.access import PgAccess
from eventbus.store.postgres.pg_push_health import append_system_events, recompute_blocked
from eventbus.store.records import Attempt, DeliveryQuery, DeliveryRecord, HealthChange, HealthChangeKind, SystemEvents
from eventbus.store.sqlite_admin import DELIVERY_COLUMNS, UPDATABLE, column_of, column_value, delivery_from_row
from eventbus.store.sqlite_attempts import ATTEMPT_COLUMNS, attempt_from_row

T = TypeVar("T")
_FROM = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"
DEADLOCK_RETRIES = 3


async def _require(conn: asyncpg.Connection, subscription_id: str, *, lock: bool = False) -> tuple[str, str]:
    """(state, kind) of a live subscription; `lock`: its row stays locked until the transaction ends."""
    row = await conn.fetchrow(
        "SELECT state, kind FROM subscriptions WHERE id = $1 AND state != 'deleted'" + (" FOR UPDATE" if lock else ""),
        subscription_id,
    )
    if row is None:
        raise NotFoundError(f"subscription {subscription_id} does not exist")
    return str(row[0]), str(row[1])


async def _delivery(conn: asyncpg.Connection, delivery_id: str) -> DeliveryRecord | None:
    row = await conn.fetchrow(f"SELECT {DELIVERY_COLUMNS} {_FROM} WHERE d.delivery_id = $1", delivery_id)
    return delivery_from_row(row) if row else None


class PushAdminOperations(PgAccess):
    """Mixed into `PostgresStore` through `PushOperations`, which adds the dispatcher's side."""

    async def _in_tx(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`op` in one transaction. Transactions lock in one order (pg_push_health), but a deadlock the order
        cannot rule out (a resend beside a lease of the same subject) is broken by PostgreSQL aborting one: run
        that one again."""
        for _ in range(DEADLOCK_RETRIES):
            try:
                async with self._tx() as conn:
                    return await op(conn)
            except asyncpg.DeadlockDetectedError:
                continue
        raise UnavailableError("the store is too busy (repeated lock conflicts); try again")

    # -- reads -------------------------------------------------------------------------------------------------

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        row = await self._read_one(f"SELECT {DELIVERY_COLUMNS} {_FROM} WHERE d.delivery_id = $1", delivery_id)
        return delivery_from_row(row) if row else None

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        clauses: list[str] = []
        params: list[object] = []

        def where(condition: str, value: object) -> None:
            params.append(value)
            clauses.append(condition.replace("?", f"${len(params)}"))

        if query.after_id:
            where("d.delivery_id < ?" if query.newest_first else "d.delivery_id > ?", query.after_id)
        if query.subscription_id is not None:
            where("d.subscription_id = ?", query.subscription_id)
        if query.event_seq is not None:
            where("d.event_seq = ?", query.event_seq)
        if query.state is not None:
            where("d.state = ?", query.state)
        sql = (
            f"SELECT {DELIVERY_COLUMNS} {_FROM} {'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
            f"ORDER BY d.delivery_id {'DESC' if query.newest_first else 'ASC'} LIMIT ${len(params) + 1}"
        )
        return [delivery_from_row(row) for row in await self._read(sql, *params, query.limit)]

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        rows = await self._read(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY number, started_at", delivery_id
        )
        return [attempt_from_row(row) for row in rows]

    async def ordering_blocker(self, delivery: DeliveryRecord) -> DeliveryRecord | None:
        """The earlier delivery of the same subject that holds this one back (ordering = subject), if any."""
        if delivery.ordering_key is None or delivery.state not in ("pending", "leased"):
            return None
        row = await self._read_one(
            f"SELECT {DELIVERY_COLUMNS} {_FROM} WHERE d.subscription_id = $1 AND d.ordering_key = $2 "
            "AND d.state IN ('pending', 'leased') AND d.event_seq < $3 ORDER BY d.event_seq LIMIT 1",
            delivery.subscription_id,
            delivery.ordering_key,
            delivery.event_seq,
        )
        return delivery_from_row(row) if row else None

    # -- subscription state and settings -----------------------------------------------------------------------

    async def set_subscription_state(
        self,
        subscription_id: str,
        state: SubscriptionState,
        *,
        reason: str | None,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[HealthChange]:
        """Pause, resume, disable or enable. Leaving `disabled` starts the health record afresh (circuit closed)."""

        async def apply(conn: asyncpg.Connection) -> tuple[list[HealthChange], set[str]]:
            previous, kind = await _require(conn, subscription_id, lock=True)
            updates: dict[str, object] = {"state": state.value, "state_reason": reason, "updated_at": to_micros(now)}
            changes: list[HealthChange] = []
            if previous == SubscriptionState.DISABLED and state != SubscriptionState.DISABLED:
                updates.update(HEALTH_RESET)
                changes.append(HealthChange(HealthChangeKind.ENABLED, subscription_id, kind, now, {"was": previous}))
            elif state == SubscriptionState.DISABLED and previous != SubscriptionState.DISABLED:
                changes.append(HealthChange(HealthChangeKind.DISABLED, subscription_id, kind, now, {"reason": reason}))
            assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(updates, start=2))
            await conn.execute(
                f"UPDATE subscriptions SET {assignments} WHERE id = $1", subscription_id, *updates.values()
            )
            await self._subscriptions_changed(conn)
            touched = await append_system_events(conn, changes, system_events, now=now) | {subscription_id}
            await self._announce(conn, touched)
            return changes, touched

        changes, touched = await self._in_tx(apply)
        self.wakeups.notify(touched)
        return changes

    async def update_subscription(
        self,
        subscription_id: str,
        changes: dict[str, object],
        *,
        now: datetime,
        if_updated_at: datetime | None = None,
    ) -> None:
        fields = {column_of(name): column_value(name, value) for name, value in changes.items()}

        async def apply(conn: asyncpg.Connection) -> None:
            await _require(conn, subscription_id, lock=True)  # locked: the compare-and-set below is atomic
            unknown = set(fields) - UPDATABLE
            if unknown:
                raise ValueError(f"not updatable: {sorted(unknown)}")
            if if_updated_at is not None:
                current = await conn.fetchval("SELECT updated_at FROM subscriptions WHERE id = $1", subscription_id)
                if current != to_micros(if_updated_at):
                    raise ConcurrentUpdateError(f"subscription {subscription_id} changed meanwhile")
            if fields:
                stamp = max(to_micros(now), (to_micros(if_updated_at) + 1) if if_updated_at is not None else 0)
                assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(fields, start=3))
                await conn.execute(
                    f"UPDATE subscriptions SET {assignments}, updated_at = $2 WHERE id = $1",
                    subscription_id,
                    stamp,
                    *fields.values(),
                )
                await self._subscriptions_changed(conn)
            await self._announce(conn, [subscription_id])

        await self._in_tx(apply)
        self.wakeups.notify([subscription_id])

    # -- resend, recover, replay ---------------------------------------------------------------------------------

    async def resend_delivery(self, delivery_id: str, *, now: datetime) -> DeliveryRecord:
        """One attempt now, outside the schedule: a finished delivery gets one manual attempt, a pending one is due."""

        async def resend(conn: asyncpg.Connection) -> DeliveryRecord:
            # Locked: a lease elsewhere either took it before (then it is `leased` here) or waits for this one.
            locked = await conn.fetchrow("SELECT 1 FROM deliveries WHERE delivery_id = $1 FOR UPDATE", delivery_id)
            found = await _delivery(conn, delivery_id) if locked else None
            if found is None:
                raise NotFoundError(f"delivery {delivery_id} does not exist")
            state, _ = await _require(conn, found.subscription_id)
            if state == SubscriptionState.DISABLED:
                raise FailedPreconditionError(
                    f"subscription {found.subscription_id} is disabled: enable it (resume) before resending"
                )
            if found.state == "leased":
                raise FailedPreconditionError(f"delivery {delivery_id} is being attempted right now")
            stamp = to_micros(now)
            await conn.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, queued_at = $2, manual = $3, "
                "finished_at = NULL, dead_reason = NULL WHERE delivery_id = $1",
                delivery_id,
                stamp,
                1 if found.state in ("dead", "succeeded") else 0,
            )
            if found.ordering_key is not None:
                await recompute_blocked(conn, found.subscription_id)
            record = await _delivery(conn, delivery_id)
            assert record is not None
            await self._announce(conn, [record.subscription_id])
            return record

        record = await self._in_tx(resend)
        self.wakeups.notify([record.subscription_id])
        return record

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, include_pending: bool, limit: int, now: datetime
    ) -> list[tuple[str, str]]:
        """Re-queue dead deliveries (and, if asked, pending ones: due now) created since `since`, with a fresh
        schedule. Returns (delivery_id, event_id) of each, oldest first, at most `limit`."""
        stamp = to_micros(now)
        states = ["dead", "pending"] if include_pending else ["dead"]

        async def recover(conn: asyncpg.Connection) -> list[tuple[str, str]]:
            await _require(conn, subscription_id)
            # Called in chunks with the same `now`: what an earlier chunk re-queued (queued_at = now) is not taken
            # again. Locked: a pending one a lease takes meanwhile is left to that lease.
            rows = await conn.fetch(
                f"SELECT d.delivery_id, e.event_id {_FROM} WHERE d.subscription_id = $1 AND d.state = ANY($2::text[]) "
                "AND d.created_at >= $3 AND COALESCE(d.queued_at, 0) != $4 ORDER BY d.event_seq LIMIT $5 "
                "FOR UPDATE OF d",
                subscription_id,
                states,
                to_micros(since),
                stamp,
                limit,
            )
            if not rows:
                return []
            await conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1, queued_at = $1, "
                "manual = 0, finished_at = NULL, dead_reason = NULL WHERE delivery_id = ANY($2::text[])",
                stamp,
                [row[0] for row in rows],
            )
            ordering = await conn.fetchval("SELECT ordering FROM subscriptions WHERE id = $1", subscription_id)
            if ordering == Ordering.SUBJECT:
                await recompute_blocked(conn, subscription_id)
            await self._announce(conn, [subscription_id])
            return [(row[0], row[1]) for row in rows]

        recovered = await self._in_tx(recover)
        self.wakeups.notify([subscription_id])
        return recovered

    async def replay(
        self, subscription_id: str, *, patterns: Sequence[str] | None, since: datetime, now: datetime
    ) -> int:
        """Start a backfill of the events received since `since` (matching `patterns`, else the subscription's own).

        Returns the last seq it covers (0: nothing to replay)."""

        async def replay(conn: asyncpg.Connection) -> int:
            await _require(conn, subscription_id, lock=True)
            busy = await conn.fetchval("SELECT backfill_next_seq FROM subscriptions WHERE id = $1", subscription_id)
            if busy is not None:
                raise FailedPreconditionError(
                    f"subscription {subscription_id} is already backfilling; retry when it is done"
                )
            # Before reading the end of the log: appends in flight have committed, so no seq up to `upto` is late.
            await self._subscriptions_changed(conn)
            first = await conn.fetchval("SELECT MIN(seq) FROM events WHERE received_at >= $1", to_micros(since))
            upto = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events")
            if first is None:
                return 0
            await conn.execute(
                "UPDATE subscriptions SET backfill_next_seq = $2, backfill_upto_seq = $3, backfill_patterns = $4, "
                "updated_at = $5 WHERE id = $1",
                subscription_id,
                first,
                upto,
                json.dumps(list(patterns)) if patterns else None,
                to_micros(now),
            )
            return int(upto)

        return await self._in_tx(replay)
