"""Deliveries on PostgreSQL: leases taken side by side (SKIP LOCKED) and fenced, settlements, the dispatcher's poll."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import from_micros, to_micros
from eventbus.store.base import DeadReason, LeasedDelivery, Settle
from eventbus.store.postgres import pg_push_health as health
from eventbus.store.postgres.pg_push_admin import PushAdminOperations
from eventbus.store.records import AttemptResult, HealthChange, HealthPolicy, SystemEvents
from eventbus.store.rows import EVENT_COLUMNS, event_from_row
from eventbus.store.sqlite_subscriptions import backlog_end

_LEASE_ROUNDS = 10
_PROBE_READ_AHEAD = 64
# Columns before the event's: delivery_id, attempts, first_attempt_at, pending_since, manual, ordering_key.
_EVENT_OFFSET = 6
_DUE = (
    "SELECT d.delivery_id, d.attempts, d.first_attempt_at, "
    # max pending age counts from when it was first due: not_before of a delayed event, a resend or a recovery
    "GREATEST(d.created_at, COALESCE(e.not_before, 0), COALESCE(d.queued_at, 0)), d.manual, d.ordering_key, "
    f"{', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))} "
    "FROM deliveries d JOIN events e ON e.seq = d.event_seq "
    # ordering = subject: a delivery behind an open one of its subject is `blocked` until that one finishes
    "WHERE d.subscription_id = $1 AND d.state IN ('pending', 'leased') AND d.blocked = 0 {gate}"
    "AND d.event_seq < $4 AND d.next_attempt_at <= $2 ORDER BY d.next_attempt_at, d.event_seq LIMIT $3 "
    # rows another process is leasing right now are not waited for: they are its, the next ones are ours
    "FOR UPDATE OF d SKIP LOCKED"
)
_TAKE = (
    # lease_tokens is a sequence: every lease of every delivery gets a token never handed out before
    "UPDATE deliveries SET state = 'leased', attempts = attempts + 1, next_attempt_at = $1, "
    "lease_token = nextval('lease_tokens'), first_attempt_at = COALESCE(first_attempt_at, $2), last_attempt_at = $2 "
    "WHERE delivery_id = ANY($3::text[]) RETURNING delivery_id, lease_token"
)
_BURY = (
    "UPDATE deliveries d SET state = 'dead', dead_reason = u.reason, finished_at = $1, lease_token = NULL "
    "FROM unnest($2::text[], $3::text[]) AS u(delivery_id, reason) WHERE d.delivery_id = u.delivery_id"
)


async def _lease(
    conn: asyncpg.Connection, subscription_id: str, *, limit: int, lease_for: timedelta, now: datetime
) -> tuple[list[LeasedDelivery], list[health.Died]]:
    """The leases, and the deliveries that died instead."""
    stamp = to_micros(now)
    policy_sql = (
        "SELECT retry_schedule, max_pending_age, circuit, next_probe_at, kind, backfill_next_seq FROM subscriptions "
        "WHERE id = $1 AND state = 'active'"
    )
    policy = await conn.fetchrow(policy_sql, subscription_id)
    if policy is not None and policy[2] == "open":
        # Locked while the circuit is open: one process at a time decides on the probe and takes its slot.
        policy = await conn.fetchrow(policy_sql + " FOR UPDATE", subscription_id)
    if policy is None:
        return [], []
    max_attempts = len(json.loads(policy[0])) + 1
    oldest_allowed = stamp - policy[1]
    probe = policy[2] == "open"
    held_from = backlog_end(policy[4], policy[5])  # a group's backlog goes out before what came after it
    # An open circuit holds every due delivery without using its attempts; one probe at a time tests the
    # destination, and its lease holds the probe slot until it is settled or runs out. A resend is an operator
    # asking for an attempt now: it goes through an open circuit (without being the probe).
    gate = ""
    lease_at_most = limit
    if probe and policy[3] is not None and policy[3] > stamp:
        gate, probe = "AND d.manual = 1 AND d.state = 'pending' ", False
    elif probe:
        # A probe is one delivery, but the rows read past it let expired or exhausted ones die meanwhile.
        lease_at_most, limit = 1, max(limit, _PROBE_READ_AHEAD)
    sql = _DUE.format(gate=gate)
    expires = stamp + lease_for // timedelta(microseconds=1)
    leased: list[LeasedDelivery] = []
    died: list[health.Died] = []
    # Rows that die here (exhausted, expired) do not fill the lease: read on past them, a bounded number of rounds,
    # so a dead backlog in front does not make the caller think there is nothing to send.
    for _ in range(_LEASE_ROUNDS):
        wanted = limit if probe else limit - len(leased)
        rows = await conn.fetch(sql, subscription_id, stamp, wanted, held_from)
        taken: list[asyncpg.Record] = []
        dead: list[tuple[str, str]] = []
        dead_keys: list[str | None] = []
        for row in rows:
            delivery_id, attempts, _first, pending_since, manual, key = row[:_EVENT_OFFSET]
            reason = None
            if attempts >= max_attempts and not manual:
                reason = DeadReason.EXHAUSTED
            elif pending_since < oldest_allowed:
                reason = DeadReason.EXPIRED
            if reason is not None:
                dead.append((delivery_id, reason.value))
                died.append((delivery_id, row[_EVENT_OFFSET + 1], row[_EVENT_OFFSET + 4], reason.value))
                dead_keys.append(key)
            elif len(leased) + len(taken) < lease_at_most:
                taken.append(row)
        if taken:
            tokens: dict[str, int] = {
                row[0]: row[1] for row in await conn.fetch(_TAKE, expires, stamp, [row[0] for row in taken])
            }
            for row in taken:
                delivery_id, attempts, first_attempt, pending_since, manual, _key = row[:_EVENT_OFFSET]
                leased.append(
                    LeasedDelivery(
                        delivery_id=delivery_id,
                        subscription_id=subscription_id,
                        event=event_from_row(row, offset=_EVENT_OFFSET),
                        attempt=attempts + 1,
                        first_attempt_at=from_micros(first_attempt or stamp),
                        lease_token=tokens[delivery_id],
                        lease_expires_at=from_micros(expires),
                        probe=probe,
                        manual=bool(manual),
                        pending_since=from_micros(pending_since),
                    )
                )
        if dead:
            await conn.execute(_BURY, stamp, [d for d, _ in dead], [r for _, r in dead])
            for key in sorted({k for k in dead_keys if k is not None}):
                await health.promote_next(conn, subscription_id, key)
        if not dead or len(leased) >= lease_at_most or len(rows) < wanted:
            break
    if probe and leased:
        await conn.execute("UPDATE subscriptions SET next_probe_at = $2 WHERE id = $1", subscription_id, expires)
    return leased, died


class PushOperations(PushAdminOperations):
    """Mixed into `PostgresStore`, which provides the pool (`_tx`, `_read`) and the wake-ups."""

    async def lease_deliveries(
        self,
        subscription_id: str,
        *,
        limit: int,
        lease_for: timedelta,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[LeasedDelivery]:
        async def lease(conn: asyncpg.Connection) -> tuple[list[LeasedDelivery], set[str]]:
            leased, died = await _lease(conn, subscription_id, limit=limit, lease_for=lease_for, now=now)
            # Only push kinds pass `system_events`: a consumer group's deaths are not announced.
            changes = await health.dead_changes(conn, subscription_id, died, now) if system_events else []
            touched = await health.append_system_events(conn, changes, system_events, now=now)
            await self._announce(conn, touched)
            return leased, touched

        leased, touched = await self._in_tx(lease)
        self.wakeups.notify(touched)
        return leased

    async def settle_deliveries(self, settles: Sequence[Settle], *, now: datetime) -> list[bool]:
        if not settles:
            return []

        async def settle(conn: asyncpg.Connection) -> tuple[list[bool], set[str]]:
            results, touched, heads = await health.settle_rows(conn, settles, now=now)
            await health.promote_heads(conn, heads)
            await self._announce(conn, touched)
            return results, touched

        results, touched = await self._in_tx(settle)
        self.wakeups.notify(touched)
        return results

    async def extend_leases(self, leases: Sequence[tuple[str, int]], *, until: datetime) -> list[bool]:
        if not leases:
            return []

        async def extend(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(
                "UPDATE deliveries d SET next_attempt_at = $1 "
                "FROM unnest($2::text[], $3::bigint[]) AS l(delivery_id, lease_token) "
                "WHERE d.delivery_id = l.delivery_id AND d.state = 'leased' AND d.lease_token = l.lease_token "
                "RETURNING d.delivery_id, d.lease_token",
                to_micros(until),
                [d for d, _ in leases],
                [t for _, t in leases],
            )

        extended = {(row[0], row[1]) for row in await self._in_tx(extend)}
        return [lease in extended for lease in leases]

    async def release_leases(self, leases: Sequence[tuple[str, int]], *, now: datetime, unsent: bool = False) -> int:
        """Give leases back: due at once. `unsent`: they never left this process, so the attempt is taken back."""
        if not leases:
            return 0

        async def release(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch(
                "UPDATE deliveries d SET state = 'pending', next_attempt_at = $1, lease_token = NULL, "
                "attempts = d.attempts - $2 FROM unnest($3::text[], $4::bigint[]) AS l(delivery_id, lease_token) "
                "WHERE d.delivery_id = l.delivery_id AND d.state = 'leased' AND d.lease_token = l.lease_token "
                "RETURNING d.subscription_id",
                to_micros(now),
                int(unsent),
                [d for d, _ in leases],
                [t for _, t in leases],
            )
            await self._announce(conn, [row[0] for row in rows])
            return [row[0] for row in rows]  # the subscription of each delivery released

        released = await self._in_tx(release)
        self.wakeups.notify(released)
        return len(released)

    async def record_attempt(
        self, result: AttemptResult, *, policy: HealthPolicy, now: datetime, system_events: SystemEvents | None
    ) -> tuple[bool, list[HealthChange]]:
        async def record(conn: asyncpg.Connection) -> tuple[bool, list[HealthChange], set[str]]:
            applied, changes, touched = await health.record_attempt(
                conn,
                result,
                policy=policy,
                now=now,
                system_events=system_events,
                subscriptions_changed=self._subscriptions_changed,
            )
            await self._announce(conn, touched)
            return applied, changes, touched

        applied, changes, touched = await self._in_tx(record)
        self.wakeups.notify(touched)
        return applied, changes

    async def due_subscriptions(self, kinds: Sequence[str], *, now: datetime) -> list[tuple[str, datetime]]:
        """Active subscriptions of these kinds with deliveries to send, and when the first is due (or probed)."""
        rows = await self._read(
            "SELECT id, due, circuit, next_probe_at, manual_due FROM (SELECT s.id, s.circuit, s.next_probe_at, "
            # a resend goes through an open circuit: it is due when it is, not at the next probe
            "(SELECT MIN(m.next_attempt_at) FROM deliveries m WHERE m.subscription_id = s.id AND m.manual = 1 "
            "AND m.state = 'pending') AS manual_due, "
            # Blocked deliveries (behind an open one of their subject) are not due: they would make an ordered
            # subscription look due while it waits for a retry.
            "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
            "AND d.state IN ('pending', 'leased') AND d.blocked = 0) AS due "
            "FROM subscriptions s WHERE s.kind = ANY($1::text[]) AND s.state = 'active') AS subscription_due "
            "WHERE due IS NOT NULL",
            list(kinds),
        )
        due: list[tuple[str, datetime]] = []
        for subscription_id, first_due, circuit, next_probe, manual_due in rows:
            at = max(first_due, next_probe or 0) if circuit == "open" else first_due
            if manual_due is not None:
                at = min(at, manual_due)
            due.append((subscription_id, from_micros(at)))
        return due
