"""Push-delivery operations of the SQLite store: the attempt log, the dispatcher's poll, operator actions."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from eventbus.clock import from_micros
from eventbus.store import sqlite_admin as admin
from eventbus.store import sqlite_attempts as attempts
from eventbus.store.base import SubscriptionState
from eventbus.store.records import (
    Attempt,
    AttemptResult,
    DeliveryQuery,
    DeliveryRecord,
    HealthChange,
    HealthPolicy,
    SystemEvents,
)
from eventbus.store.sqlite_access import StoreAccess


class PushOperations(StoreAccess):
    """Mixed into `SQLiteStore`, which provides the connections (`_read`, `_write`) and the fan-out cache."""

    async def record_attempt(
        self, result: AttemptResult, *, policy: HealthPolicy, now: datetime, system_events: SystemEvents | None
    ) -> tuple[bool, list[HealthChange]]:
        applied, changes, touched = await self._write(
            lambda conn: attempts.record_attempt(
                conn, self._cache, result, policy=policy, now=now, system_events=system_events
            )
        )
        self.wakeups.notify(touched)
        return applied, changes

    async def due_subscriptions(self, kinds: Sequence[str], *, now: datetime) -> list[tuple[str, datetime]]:
        """Active subscriptions of these kinds with deliveries to send, and when the first is due (or probed)."""
        marks = ", ".join("?" * len(kinds))
        sql = (
            "SELECT id, due, circuit, next_probe_at, manual_due FROM (SELECT s.id, s.circuit, s.next_probe_at, "
            # a resend goes through an open circuit: it is due when it is, not at the next probe
            "(SELECT MIN(m.next_attempt_at) FROM deliveries m WHERE m.subscription_id = s.id AND m.manual = 1 "
            "AND m.state = 'pending') AS manual_due, "
            # Blocked deliveries (behind an open one of their subject) are not due: they would make an ordered
            # subscription look due while it waits for a retry.
            "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
            "AND d.state IN ('pending', 'leased') AND d.blocked = 0) AS due "
            f"FROM subscriptions s WHERE s.kind IN ({marks}) AND s.state = 'active') WHERE due IS NOT NULL"
        )
        rows = await self._read(lambda c: c.execute(sql, tuple(kinds)).fetchall())
        due: list[tuple[str, datetime]] = []
        for subscription_id, first_due, circuit, next_probe, manual_due in rows:
            at = max(first_due, next_probe or 0) if circuit == "open" else first_due
            if manual_due is not None:
                at = min(at, manual_due)
            due.append((subscription_id, from_micros(at)))
        return due

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        return await self._read(lambda c: admin.get_delivery(c, delivery_id))

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        return await self._read(lambda c: admin.list_deliveries(c, query))

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        sql = f"SELECT {attempts.ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY number, started_at"
        rows = await self._read(lambda c: c.execute(sql, (delivery_id,)).fetchall())
        return [attempts.attempt_from_row(row) for row in rows]

    async def ordering_blocker(self, delivery: DeliveryRecord) -> DeliveryRecord | None:
        return await self._read(lambda c: admin.ordering_blocker(c, delivery))

    async def set_subscription_state(
        self,
        subscription_id: str,
        state: SubscriptionState,
        *,
        reason: str | None,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[HealthChange]:
        def apply(conn: sqlite3.Connection) -> tuple[list[HealthChange], set[str]]:
            changes = admin.set_state(conn, self._cache, subscription_id, state, reason=reason, now=now)
            touched = attempts.append_system_events(conn, self._cache, changes, system_events, now=now)
            return changes, touched | {subscription_id}

        changes, touched = await self._write(apply)
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
        fields = {admin.column_of(name): admin.column_value(name, value) for name, value in changes.items()}
        await self._write(
            lambda conn: admin.update_subscription(conn, self._cache, subscription_id, fields, now, if_updated_at)
        )
        self.wakeups.notify([subscription_id])

    async def resend_delivery(self, delivery_id: str, *, now: datetime) -> DeliveryRecord:
        record = await self._write(lambda conn: admin.resend(conn, delivery_id, now))
        self.wakeups.notify([record.subscription_id])
        return record

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, include_pending: bool, limit: int, now: datetime
    ) -> list[tuple[str, str]]:
        recovered = await self._write(
            lambda conn: admin.recover(
                conn, subscription_id, since=since, include_pending=include_pending, limit=limit, now=now
            )
        )
        self.wakeups.notify([subscription_id])
        return recovered

    async def replay(
        self, subscription_id: str, *, patterns: Sequence[str] | None, since: datetime, now: datetime
    ) -> int:
        return await self._write(
            lambda conn: admin.replay(
                conn, self._cache, subscription_id, patterns=list(patterns) if patterns else None, since=since, now=now
            )
        )
