"""Subscriptions in the PostgreSQL store: create at a start position, read, delete and purge, backfill, seek, stats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import from_micros, to_micros
from eventbus.errors import NotFoundError
from eventbus.ids import new_id
from eventbus.model import filter_document
from eventbus.store.base import (
    Ordering,
    StartPosition,
    Subscription,
    SubscriptionSpec,
    SubscriptionStats,
)
from eventbus.store.postgres.access import APPEND_LOCK, PgAccess
from eventbus.store.postgres.pg_events import PG_INSERT_DELIVERY, affected_rows, ordering_gate
from eventbus.store.rows import EVENT_COLUMNS, event_from_row, schedule_to_text
from eventbus.store.sqlite_fanout import Matcher, PlannedDelivery
from eventbus.store.sqlite_subscriptions import (
    BACKLOG_END_SQL,
    NO_BACKLOG,
    SUBSCRIPTION_COLUMNS,
    _start_bounds,
    backfill_due,
    subscription_from_row,
)

_LIVE_BY_NAME = f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE kind = $1 AND name = $2 AND state != 'deleted'"
_LAST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events"

# What goes when deleted subscriptions are purged, in this order, each a bounded batch: their attempts, their
# deliveries, their destination state; the shared scopes they used (a scope nobody uses any more goes too); last
# the subscriptions themselves, once nothing of theirs is left. (SQLite's statements, with keys for rowids.)
_PURGE = (
    "DELETE FROM attempts WHERE attempt_id IN (SELECT a.attempt_id FROM attempts a JOIN subscriptions s "
    "ON s.id = a.subscription_id WHERE s.state = 'deleted' LIMIT $1)",
    "DELETE FROM deliveries WHERE delivery_id IN (SELECT d.delivery_id FROM deliveries d JOIN subscriptions s "
    "ON s.id = d.subscription_id WHERE s.state = 'deleted' LIMIT $1)",
    "DELETE FROM destination_state WHERE (subscription_id, key) IN (SELECT st.subscription_id, st.key "
    "FROM destination_state st JOIN subscriptions s ON s.id = st.subscription_id WHERE s.state = 'deleted' LIMIT $1)",
    "DELETE FROM destination_scope_users WHERE (scope, subscription_id) IN (SELECT u.scope, u.subscription_id "
    "FROM destination_scope_users u JOIN subscriptions s ON s.id = u.subscription_id WHERE s.state = 'deleted' "
    "LIMIT $1)",
    "DELETE FROM destination_state WHERE (subscription_id, key) IN (SELECT st.subscription_id, st.key "
    "FROM destination_state st WHERE st.subscription_id LIKE '%/%' AND NOT EXISTS "
    "(SELECT 1 FROM destination_scope_users u WHERE u.scope = st.subscription_id) LIMIT $1)",
    "DELETE FROM subscriptions WHERE id IN (SELECT id FROM subscriptions WHERE state = 'deleted' AND "
    "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM attempts a WHERE a.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM destination_state st WHERE st.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM destination_scope_users u WHERE u.subscription_id = subscriptions.id) LIMIT $1)",
)


async def _start_seq(conn: asyncpg.Connection, start: StartPosition) -> int | None:
    """The first seq a new backlog covers, or None for `latest` (no backlog)."""
    if start.edge == "earliest":
        return 1
    if start.edge == "seq" and start.seq is not None:
        return max(1, start.seq)
    if start.edge == "time" and start.time is not None:
        first = await conn.fetchval("SELECT MIN(seq) FROM events WHERE received_at >= $1", to_micros(start.time))
        return int(first) if first is not None else None
    return None


class SubscriptionOperations(PgAccess):
    """Subscription life cycle and reads. Mixed into `PostgresStore`.

    Every change to what fan-out matches goes through `_subscriptions_changed` (the append lock, then a bump of
    `subscriptions_version`): in-flight appends finish first and every process reloads its matchers.
    """

    async def create_subscription(
        self, spec: SubscriptionSpec, *, start: StartPosition, now: datetime
    ) -> tuple[Subscription, bool]:
        stamp = to_micros(now)
        async with self._tx() as conn:
            if spec.name is not None:
                row = await conn.fetchrow(_LIVE_BY_NAME, spec.kind, spec.name)
                if row is not None:
                    # Joining is activity: the janitor must not expire a group someone is joining right now.
                    await conn.execute("UPDATE subscriptions SET last_active_at = $1 WHERE id = $2", stamp, row[0])
                    return subscription_from_row(row), False
            # From here appends wait for this transaction: the end of the log read below is final, and every
            # event after it is fanned out with this subscription among the matchers.
            await self._subscriptions_changed(conn)
            if spec.name is not None:
                row = await conn.fetchrow(_LIVE_BY_NAME, spec.kind, spec.name)
                if row is not None:  # created meanwhile by another process (and active just now)
                    return subscription_from_row(row), False
            upto = int(await conn.fetchval(_LAST_SEQ))
            first = await _start_seq(conn, start)
            backfill = first if first is not None and first <= upto else None
            start_seq, start_at = _start_bounds(start)
            subscription_id = new_id("sub")
            await conn.execute(
                "INSERT INTO subscriptions (id, kind, name, patterns, filter, retry_schedule, max_pending_age, "
                "ephemeral, options, created_at, updated_at, last_active_at, backfill_next_seq, backfill_upto_seq, "
                "start_seq, start_at, rate_limit, max_concurrency, ordering, secrets, state) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
                "$19)",
                subscription_id,
                spec.kind,
                spec.name,
                json.dumps(list(spec.patterns)),
                spec.filter_json,
                schedule_to_text(spec.retry_schedule),
                spec.max_pending_age // timedelta(microseconds=1),
                int(spec.ephemeral),
                json.dumps(spec.options, sort_keys=True),
                stamp,
                backfill,
                upto if backfill is not None else None,
                start_seq,
                start_at,
                spec.rate_limit,
                spec.max_concurrency,
                spec.ordering.value,
                json.dumps(spec.secrets, sort_keys=True),
                spec.state.value,
            )
            row = await conn.fetchrow(
                f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1", subscription_id
            )
        assert row is not None
        return subscription_from_row(row), True

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        row = await self._read_one(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 AND state != 'deleted'", subscription_id
        )
        return subscription_from_row(row) if row else None

    async def find_subscription(self, kind: str, name: str) -> Subscription | None:
        row = await self._read_one(_LIVE_BY_NAME, kind, name)
        return subscription_from_row(row) if row else None

    async def list_subscriptions(self, kind: str | None, *, after_id: str, limit: int) -> list[Subscription]:
        rows = await self._read(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE (kind = $1 OR ($1::text IS NULL AND "
            "kind != 'grpc')) AND id > $2 AND state != 'deleted' ORDER BY id LIMIT $3",
            kind,
            after_id,
            limit,
        )
        return [subscription_from_row(row) for row in rows]

    async def delete_subscription(
        self, subscription_id: str, *, now: datetime, idle_before: datetime | None = None
    ) -> bool:
        async with self._tx() as conn:
            status = await conn.execute(
                "UPDATE subscriptions SET state = 'deleted', updated_at = $1, backfill_next_seq = NULL "
                "WHERE id = $2 AND state != 'deleted' AND last_active_at < $3",
                to_micros(now),
                subscription_id,
                to_micros(idle_before) if idle_before is not None else 2**62,
            )
            deleted = affected_rows(status) == 1
            if deleted:
                await self._subscriptions_changed(conn)
                await self._announce(conn, [subscription_id])
        if deleted:
            self.wakeups.notify([subscription_id])
        return deleted

    async def purge_deleted(self, *, limit: int) -> int:
        removed = 0
        async with self._tx() as conn:
            for statement in _PURGE:
                if removed >= limit:
                    break
                removed += affected_rows(await conn.execute(statement, limit - removed))
        return removed

    async def backfill(self, subscription_id: str, *, now: datetime, limit: int) -> bool:
        stamp = to_micros(now)
        async with self._tx() as conn:
            # The row first, then the append lock (the order every transaction takes them in): appends and
            # unblocking settlements wait, so the ordering keys read below stay true until the commit.
            row = await conn.fetchrow(
                "SELECT COALESCE(backfill_patterns, patterns), filter, backfill_next_seq, backfill_upto_seq, ordering, "
                "kind, created_at FROM subscriptions WHERE id = $1 AND state != 'deleted' FOR UPDATE",
                subscription_id,
            )
            if row is None or row[2] is None:
                return False
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
            matcher = Matcher.of(subscription_id, json.loads(row[0]), row[1], ordered=row[4] == Ordering.SUBJECT)
            first, upto = int(row[2]), int(row[3])
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS}, not_before FROM events WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                first,
                upto,
                limit,
            )
            planned: list[PlannedDelivery] = []
            for event_row in rows:
                stored = event_from_row(event_row)
                document = filter_document(stored.event) if matcher.filter is not None else None
                if matcher.matches(stored.event, document):
                    due = backfill_due(row[5], row[6], stamp, event_row[13])
                    planned.append(
                        (new_id("dlv"), subscription_id, stored.seq, due, stamp, matcher.key_of(stored.event))
                    )
            pairs = {(d[1], d[5]) for d in planned if d[5] is not None}
            gate = await ordering_gate(conn, pairs)
            deliveries = [(*d, gate.blocked(d[1], d[5])) for d in planned]
            if deliveries:
                await conn.executemany(PG_INSERT_DELIVERY, deliveries)
            next_seq = int(rows[-1][0]) + 1 if len(rows) == limit else None
            if next_seq is not None and next_seq > upto:
                next_seq = None
            # Finishing wakes the subscription's waiters too: a group's leases no longer hold back what came after.
            touched = bool(deliveries) or next_seq is None
            if touched:
                await self._announce(conn, [subscription_id])
            await conn.execute(
                "UPDATE subscriptions SET backfill_next_seq = $1, backfill_patterns = CASE WHEN $1::bigint IS NULL "
                "THEN NULL ELSE backfill_patterns END WHERE id = $2",
                next_seq,
                subscription_id,
            )
        if touched:
            self.wakeups.notify([subscription_id])
        return next_seq is not None

    async def pending_backfills(self) -> list[str]:
        rows = await self._read(
            "SELECT id FROM subscriptions WHERE backfill_next_seq IS NOT NULL AND state != 'deleted'"
        )
        return [row[0] for row in rows]

    async def seek_subscription(self, subscription_id: str, *, start: StartPosition, now: datetime) -> None:
        async with self._tx() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM subscriptions WHERE id = $1 AND state != 'deleted'", subscription_id
            )
            if exists is None:
                raise NotFoundError(f"subscription {subscription_id} does not exist")
            # Deliveries, then the subscription's row, then the append lock: the order settlements take them in.
            await conn.execute(
                "DELETE FROM deliveries WHERE subscription_id = $1 AND state IN ('pending', 'leased')", subscription_id
            )
            await conn.execute(
                "UPDATE subscriptions SET updated_at = $1 WHERE id = $2", to_micros(now), subscription_id
            )
            await self._subscriptions_changed(conn)
            upto = int(await conn.fetchval(_LAST_SEQ))
            first = await _start_seq(conn, start)
            backfill_from = first if first is not None and first <= upto else None
            start_seq, start_at = _start_bounds(start)
            await conn.execute(
                "UPDATE subscriptions SET backfill_next_seq = $1, backfill_upto_seq = $2, start_seq = $3, "
                "start_at = $4 WHERE id = $5",
                backfill_from,
                upto if backfill_from is not None else None,
                start_seq,
                start_at,
                subscription_id,
            )
            await self._announce(conn, [subscription_id])
        self.wakeups.notify([subscription_id])

    async def touch_subscriptions(self, subscription_ids: Sequence[str], *, now: datetime) -> None:
        if subscription_ids:
            # Activity only (fan-out does not read it): no version bump. One statement: concurrent touches lock
            # the rows they share in the same (index) order.
            async with self._tx() as conn:
                await conn.execute(
                    "UPDATE subscriptions SET last_active_at = $1 WHERE id = ANY($2::text[])",
                    to_micros(now),
                    sorted(set(subscription_ids)),
                )

    async def idle_subscriptions(self, kind: str, *, ephemeral_before: datetime, durable_before: datetime) -> list[str]:
        rows = await self._read(
            "SELECT id FROM subscriptions WHERE kind = $1 AND state != 'deleted' AND "
            "((ephemeral = 1 AND last_active_at < $2) OR (ephemeral = 0 AND last_active_at < $3))",
            kind,
            to_micros(ephemeral_before),
            to_micros(durable_before),
        )
        return [row[0] for row in rows]

    async def next_due_at(self, subscription_id: str) -> datetime | None:
        row = await self._read_one(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE subscription_id = $1 "
            "AND state IN ('pending', 'leased') AND blocked = 0 "
            f"AND event_seq < COALESCE({BACKLOG_END_SQL.replace('?', '$1')}, {NO_BACKLOG})",
            subscription_id,
        )
        return from_micros(row[0]) if row and row[0] is not None else None

    async def subscription_stats(self, subscription_id: str) -> SubscriptionStats:
        rows = await self._read(
            "SELECT state, COUNT(*), NULL::bigint FROM deliveries WHERE subscription_id = $1 GROUP BY state "
            "UNION ALL SELECT NULL, 0, MIN(created_at) FROM deliveries WHERE subscription_id = $1 "
            "AND state IN ('pending', 'leased')",
            subscription_id,
        )
        counts = dict.fromkeys(("pending", "leased", "succeeded", "dead"), 0)
        oldest = None
        for state, count, created in rows:
            if state is None:
                oldest = from_micros(created) if created is not None else None
            else:
                counts[state] = int(count)
        return SubscriptionStats(counts["pending"], counts["leased"], counts["succeeded"], counts["dead"], oldest)
