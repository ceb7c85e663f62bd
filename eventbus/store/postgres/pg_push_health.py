"""Settlements on PostgreSQL and what follows them: ordering promotion, the attempt log, health, system events."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import to_micros
from eventbus.ids import new_id
from eventbus.store.base import DeadReason, Settle, Settlement
from eventbus.store.health_rules import HEALTH_COLUMNS, decide_health
from eventbus.store.postgres.access import APPEND_LOCK
from eventbus.store.postgres.pg_events import append_in
from eventbus.store.records import AttemptResult, HealthChange, HealthChangeKind, HealthPolicy, SystemEvents
from eventbus.store.sqlite_attempts import ATTEMPT_COLUMNS

# Locks are waited for in one order: delivery rows, the subscription row, APPEND_LOCK (`append_in`,
# `PgAccess._subscriptions_changed`, and every change that unblocks a delivery of a subject), subscriptions_version.
# A lease takes its rows with SKIP LOCKED, so it never waits for them. Only the unblocking of the next delivery of a
# subject locks a row after APPEND_LOCK; a resend, recovery or seek of that very delivery at the same moment can then
# deadlock, which PostgreSQL breaks by aborting one transaction, and `PushAdminOperations._in_tx` runs it again.
DEDUP_WINDOW = timedelta(hours=24)
# (delivery_id, event_id, event type, dead reason) of a delivery that just died
Died = tuple[str, str, str, str]
# (subscription_id, ordering_key) of a subject whose head finished: its next delivery may go
Head = tuple[str, str]
# `PgAccess._subscriptions_changed`, passed in: this module's functions run on a bare connection
Changed = Callable[[asyncpg.Connection], Awaitable[None]]

_SETTLE = (
    # One statement for a batch of mixed outcomes; a retry keeps finished_at and dead_reason as they were.
    "UPDATE deliveries d SET "
    "state = CASE s.outcome WHEN 'succeeded' THEN 'succeeded' WHEN 'retry' THEN 'pending' ELSE 'dead' END, "
    "finished_at = CASE s.outcome WHEN 'retry' THEN d.finished_at ELSE $1 END, "
    "next_attempt_at = CASE s.outcome WHEN 'retry' THEN s.retry_at ELSE d.next_attempt_at END, "
    "dead_reason = CASE s.outcome WHEN 'dead' THEN s.reason WHEN 'succeeded' THEN NULL ELSE d.dead_reason END, "
    "last_error = CASE s.outcome WHEN 'succeeded' THEN NULL ELSE s.error END, "
    "lease_token = NULL, manual = 0 "
    "FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[]) "
    "AS s(delivery_id, lease_token, outcome, retry_at, reason, error) "
    "WHERE d.delivery_id = s.delivery_id AND d.state = 'leased' AND d.lease_token = s.lease_token "
    "RETURNING d.delivery_id, s.lease_token, d.subscription_id, d.ordering_key, s.outcome"
)


async def settle_rows(
    conn: asyncpg.Connection, settles: Sequence[Settle], *, now: datetime
) -> tuple[list[bool], set[str], list[Head]]:
    """Apply each settlement whose lease token is still current: (applied per item, subscriptions to wake, the
    ordering keys whose head finished). Pass those to `promote_heads` last (it takes APPEND_LOCK)."""
    stamp = to_micros(now)
    rows = await conn.fetch(
        _SETTLE,
        stamp,
        [s.delivery_id for s in settles],
        [s.lease_token for s in settles],
        [s.outcome.value for s in settles],
        [to_micros(s.retry_at or now) if s.outcome is Settlement.RETRY else None for s in settles],
        [(s.reason or DeadReason.DROPPED).value if s.outcome is Settlement.DEAD else None for s in settles],
        [s.error for s in settles],
    )
    settled = {(row[0], row[1]) for row in rows}
    results: list[bool] = []
    touched: set[str] = set()
    heads: set[Head] = set()
    for settle in settles:
        key = (settle.delivery_id, settle.lease_token)
        results.append(key in settled)
        settled.discard(key)  # the same lease twice in one batch: settled once, like one statement per item
    for _, _, subscription_id, ordering_key, outcome in rows:
        # A retry changes when the subscription is next due; a finished head of a subject (ordering) lets the
        # next delivery of that subject go now: wake the dispatcher for both rather than wait for its next poll.
        if outcome == Settlement.RETRY or ordering_key is not None:
            touched.add(subscription_id)
        if ordering_key is not None and outcome != Settlement.RETRY:
            heads.add((subscription_id, ordering_key))
    return results, touched, sorted(heads)


async def promote_heads(conn: asyncpg.Connection, heads: Sequence[Head]) -> None:
    for subscription_id, key in heads:
        await promote_next(conn, subscription_id, key)


async def promote_next(conn: asyncpg.Connection, subscription_id: str, key: str) -> None:
    """The head of an ordering key finished: the next delivery of that key may go (unless one already can).

    An append beside this one may have added a blocked delivery of the key, having seen the head still open; it
    did so holding APPEND_LOCK, so once this transaction holds the lock too, the statement below sees that row.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    await conn.execute(
        "UPDATE deliveries SET blocked = 0 WHERE delivery_id = (SELECT delivery_id FROM deliveries "
        "WHERE subscription_id = $1 AND ordering_key = $2 AND state = 'pending' AND blocked = 1 "
        "ORDER BY event_seq LIMIT 1) AND NOT EXISTS (SELECT 1 FROM deliveries WHERE subscription_id = $1 "
        "AND ordering_key = $2 AND state IN ('pending', 'leased') AND blocked = 0)",
        subscription_id,
        key,
    )


async def recompute_blocked(conn: asyncpg.Connection, subscription_id: str) -> None:
    """After deliveries of an ordered subscription were re-queued: each pending one waits iff an earlier one of
    its key is open or one of its key is in flight."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)  # as in `promote_next`
    await conn.execute(
        "UPDATE deliveries u SET blocked = (EXISTS (SELECT 1 FROM deliveries h WHERE h.subscription_id = "
        "u.subscription_id AND h.ordering_key = u.ordering_key AND h.delivery_id != u.delivery_id "
        # an earlier one still open, or any one of the subject in flight now (a re-queued older delivery waits
        # for it: one delivery of a subject at a time)
        "AND ((h.state IN ('pending', 'leased') AND h.event_seq < u.event_seq) OR h.state = 'leased')))::int "
        "WHERE u.subscription_id = $1 AND u.ordering_key IS NOT NULL AND u.state = 'pending'",
        subscription_id,
    )


async def dead_changes(
    conn: asyncpg.Connection, subscription_id: str, died: Sequence[Died], now: datetime
) -> list[HealthChange]:
    """`delivery_dead` for deliveries that died, except deliveries of system events (no echo between watchers)."""
    if not died:
        return []
    kind = await conn.fetchval("SELECT kind FROM subscriptions WHERE id = $1", subscription_id) or ""
    return [
        HealthChange(
            HealthChangeKind.DELIVERY_DEAD,
            subscription_id,
            str(kind),
            now,
            {"delivery_id": delivery_id, "event_id": event_id, "reason": reason},
        )
        for delivery_id, event_id, type_, reason in died
        if not type_.startswith("eventbus.")
    ]


async def append_system_events(
    conn: asyncpg.Connection, changes: Sequence[HealthChange], system_events: SystemEvents | None, *, now: datetime
) -> set[str]:
    """Publish the changes as system events inside the caller's transaction; the subscriptions to wake."""
    if not changes or system_events is None:
        return set()
    events = system_events(changes)
    if not events:
        return set()
    _, touched = await append_in(conn, events, now=now, not_before=None, window=DEDUP_WINDOW)
    return touched


async def apply_health(
    conn: asyncpg.Connection, subscription_id: str, result: AttemptResult, policy: HealthPolicy, now: datetime
) -> list[HealthChange]:
    # FOR UPDATE: attempts recorded by several processes at once count every failure, and one opens the circuit.
    row = await conn.fetchrow(f"SELECT {HEALTH_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id)
    if row is None:
        return []
    updates, changes = decide_health(subscription_id, row, result, policy, now)
    if updates:
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(updates, start=2))
        await conn.execute(f"UPDATE subscriptions SET {assignments} WHERE id = $1", subscription_id, *updates.values())
    return changes


async def record_attempt(
    conn: asyncpg.Connection,
    result: AttemptResult,
    *,
    policy: HealthPolicy,
    now: datetime,
    system_events: SystemEvents | None,
    subscriptions_changed: Changed,
) -> tuple[bool, list[HealthChange], set[str]]:
    """Record the attempt, apply its settlement and the health rules; (lease still held, changes, to wake)."""
    settle = result.settle
    [applied], touched, heads = await settle_rows(conn, [settle], now=now)
    row = await conn.fetchrow(
        "SELECT d.subscription_id, e.event_id, e.type FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq "
        "WHERE d.delivery_id = $1",
        settle.delivery_id,
    )
    if row is None:
        return False, [], set()
    subscription_id, event_id, event_type = row
    outcome = settle.outcome.value if applied else "lease_lost"
    next_at = settle.retry_at if applied and settle.outcome is Settlement.RETRY else None
    await conn.execute(
        f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
        "$14, $15)",
        new_id("att"),
        settle.delivery_id,
        subscription_id,
        result.number,
        to_micros(result.started_at),
        result.duration // timedelta(microseconds=1),
        result.status_code,
        result.error_class,
        result.error,
        json.dumps([list(h) for h in result.response_headers]) if result.response_headers else None,
        result.response_body or None,
        outcome,
        to_micros(next_at) if next_at is not None else None,
        int(result.probe),
        int(result.manual),
    )
    if not applied:
        return False, [], touched
    changes = await apply_health(conn, subscription_id, result, policy, now)
    if settle.outcome is Settlement.DEAD and event_id is not None:
        reason = settle.reason.value if settle.reason else DeadReason.DROPPED.value
        changes += await dead_changes(conn, subscription_id, [(settle.delivery_id, event_id, event_type, reason)], now)
    if any(c.kind in (HealthChangeKind.CIRCUIT_CLOSED, HealthChangeKind.DISABLED) for c in changes):
        await subscriptions_changed(conn)  # before the append below: its fan-out must see the new state
    touched |= await append_system_events(conn, changes, system_events, now=now)
    if any(c.kind is not HealthChangeKind.DELIVERY_DEAD for c in changes):
        touched.add(subscription_id)  # its state or circuit changed: whoever sends for it must look again
    await promote_heads(conn, heads)
    return True, changes, touched
