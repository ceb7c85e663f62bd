"""Subscription operations of the SQLite store: create at a start position, delete and purge, backfill, seek."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.errors import NotFoundError
from eventbus.ids import new_id
from eventbus.model import filter_document
from eventbus.store.base import Ordering, StartPosition, Subscription, SubscriptionHealth, SubscriptionSpec
from eventbus.store.rows import EVENT_COLUMNS, event_from_row, schedule_from_text, schedule_to_text
from eventbus.store.sqlite_fanout import INSERT_DELIVERY, Matcher, OrderingKeys, SubscriptionCache

SUBSCRIPTION_COLUMNS = (
    "id, kind, name, patterns, filter, retry_schedule, max_pending_age, ephemeral, state, created_at, "
    "last_active_at, options, backfill_next_seq, rate_limit, max_concurrency, ordering, secrets, state_reason, "
    "updated_at, circuit, consecutive_failures, failing_since, circuit_opened_at, next_probe_at, warnings_sent"
)


def _moment(value: int | None) -> datetime | None:
    return from_micros(value) if value is not None else None


def subscription_from_row(row: Any) -> Subscription:
    (id_, kind, name, patterns, filter_, schedule, max_age, ephemeral, state, created, active, options, backfill) = row[
        :13
    ]
    (rate, concurrency, ordering, secrets, reason, updated, circuit, failures, failing, opened, probe, warned) = row[
        13:
    ]
    return Subscription(
        id=id_,
        kind=kind,
        name=name,
        patterns=tuple(json.loads(patterns)),
        filter_json=filter_,
        retry_schedule=schedule_from_text(schedule),
        max_pending_age=timedelta(microseconds=max_age),
        ephemeral=bool(ephemeral),
        state=state,
        created_at=from_micros(created),
        last_active_at=from_micros(active),
        options=json.loads(options),
        backfilling=backfill is not None,
        rate_limit=rate,
        max_concurrency=concurrency,
        ordering=Ordering(ordering),
        secrets=json.loads(secrets),
        state_reason=reason,
        updated_at=from_micros(updated),
        health=SubscriptionHealth(
            circuit=circuit,
            consecutive_failures=failures,
            failing_since=_moment(failing),
            circuit_opened_at=_moment(opened),
            next_probe_at=_moment(probe),
            warnings_sent=warned,
        ),
    )


# A consumer group reads the log in seq order: while its backfill (a join at a start position, a seek) is still
# creating the backlog's deliveries, events published after it joined wait behind the backlog. Its leases and its
# next due time only see deliveries before `backlog_end`; every other subscription (a webhook's replay) is not held.
GROUP_KIND = "grpc"
NO_BACKLOG = 2**63 - 1
# The same as a scalar subquery, for the subscription given by the one parameter (`?`; PostgreSQL: `$1`).
BACKLOG_END_SQL = f"(SELECT backfill_next_seq FROM subscriptions WHERE id = ? AND kind = '{GROUP_KIND}')"


def backlog_end(kind: str, backfill_next_seq: int | None) -> int:
    """The first seq a subscription's leases may not hand out yet (NO_BACKLOG: none held back)."""
    return int(backfill_next_seq) if kind == GROUP_KIND and backfill_next_seq is not None else NO_BACKLOG


def backfill_due(kind: str, subscription_created_at: int, stamp: int, not_before: int | None) -> int:
    """When a backfilled delivery is due. A group's backlog is due since the group was created, before anything
    published after its join or seek (due when appended), so the lease order (due time, then seq) hands the backlog
    out first and in seq order, whichever chunk created it. Other kinds: now. Never before the event's not_before."""
    return max(subscription_created_at if kind == GROUP_KIND else stamp, not_before or 0)


def _start_bounds(start: StartPosition) -> tuple[int | None, int | None]:
    """(start_seq, start_at): the lower bounds fan-out keeps for a position that may lie past the end of the log."""
    if start.edge == "seq" and start.seq is not None:
        return start.seq, None
    if start.edge == "time" and start.time is not None:
        return None, to_micros(start.time)
    return None, None


def _start_seq(conn: sqlite3.Connection, start: StartPosition) -> int | None:
    """The first seq a new backlog covers, or None for `latest` (no backlog)."""
    if start.edge == "earliest":
        return 1
    if start.edge == "seq" and start.seq is not None:
        return max(1, start.seq)
    if start.edge == "time" and start.time is not None:
        row = conn.execute("SELECT MIN(seq) FROM events WHERE received_at >= ?", (to_micros(start.time),)).fetchone()
        return int(row[0]) if row[0] is not None else None
    return None


def create_subscription(
    conn: sqlite3.Connection, cache: SubscriptionCache, spec: SubscriptionSpec, *, start: StartPosition, now: datetime
) -> tuple[Subscription, bool]:
    if spec.name is not None:
        row = conn.execute(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE kind = ? AND name = ? AND state != 'deleted'",
            (spec.kind, spec.name),
        ).fetchone()
        if row is not None:
            # Joining is activity: the janitor must not expire a group someone is joining right now.
            conn.execute("UPDATE subscriptions SET last_active_at = ? WHERE id = ?", (to_micros(now), row[0]))
            return subscription_from_row(row), False
    upto = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    first = _start_seq(conn, start)
    backfill = first if first is not None and first <= upto else None
    start_seq, start_at = _start_bounds(start)
    stamp = to_micros(now)
    subscription_id = new_id("sub")
    conn.execute(
        "INSERT INTO subscriptions (id, kind, name, patterns, filter, retry_schedule, max_pending_age, ephemeral, "
        "options, created_at, updated_at, last_active_at, backfill_next_seq, backfill_upto_seq, start_seq, start_at, "
        "rate_limit, max_concurrency, ordering, secrets, state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
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
            stamp,
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
        ),
    )
    cache.invalidate()
    row = conn.execute(f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    return subscription_from_row(row), True


def delete_subscription(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    subscription_id: str,
    *,
    now: datetime,
    idle_before: datetime | None = None,
) -> bool:
    cursor = conn.execute(
        "UPDATE subscriptions SET state = 'deleted', updated_at = ?, backfill_next_seq = NULL "
        "WHERE id = ? AND state != 'deleted' AND last_active_at < ?",
        (to_micros(now), subscription_id, to_micros(idle_before) if idle_before is not None else 2**62),
    )
    cache.invalidate()
    return cursor.rowcount == 1


# What goes when deleted subscriptions are purged, in this order, each a bounded batch: their attempts, their
# deliveries, their destination state; the shared scopes they used (a scope nobody uses any more goes too); last
# the subscriptions themselves, once nothing of theirs is left.
_PURGE = (
    "DELETE FROM attempts WHERE rowid IN (SELECT a.rowid FROM attempts a JOIN subscriptions s "
    "ON s.id = a.subscription_id WHERE s.state = 'deleted' LIMIT ?)",
    "DELETE FROM deliveries WHERE rowid IN (SELECT d.rowid FROM deliveries d JOIN subscriptions s "
    "ON s.id = d.subscription_id WHERE s.state = 'deleted' LIMIT ?)",
    "DELETE FROM destination_state WHERE rowid IN (SELECT st.rowid FROM destination_state st JOIN "
    "subscriptions s ON s.id = st.subscription_id WHERE s.state = 'deleted' LIMIT ?)",
    "DELETE FROM destination_scope_users WHERE rowid IN (SELECT u.rowid FROM destination_scope_users u "
    "JOIN subscriptions s ON s.id = u.subscription_id WHERE s.state = 'deleted' LIMIT ?)",
    "DELETE FROM destination_state WHERE rowid IN (SELECT st.rowid FROM destination_state st "
    "WHERE st.subscription_id LIKE '%/%' AND NOT EXISTS (SELECT 1 FROM destination_scope_users u "
    "WHERE u.scope = st.subscription_id) LIMIT ?)",
    "DELETE FROM subscriptions WHERE id IN (SELECT id FROM subscriptions WHERE state = 'deleted' AND "
    "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM attempts a WHERE a.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM destination_state st WHERE st.subscription_id = subscriptions.id) AND "
    "NOT EXISTS (SELECT 1 FROM destination_scope_users u WHERE u.subscription_id = subscriptions.id) LIMIT ?)",
)


def purge_deleted(conn: sqlite3.Connection, *, limit: int) -> int:
    removed = 0
    for statement in _PURGE:
        if removed >= limit:
            break
        removed += conn.execute(statement, (limit - removed,)).rowcount
    return removed


def backfill(
    conn: sqlite3.Connection, cache: SubscriptionCache, subscription_id: str, *, now: datetime, limit: int
) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT COALESCE(backfill_patterns, patterns), filter, backfill_next_seq, backfill_upto_seq, ordering, kind, "
        "created_at FROM subscriptions WHERE id = ? AND state != 'deleted'",
        (subscription_id,),
    ).fetchone()
    if row is None or row[2] is None:
        return False, False
    matcher = Matcher.of(subscription_id, json.loads(row[0]), row[1], ordered=row[4] == Ordering.SUBJECT)
    first, upto = row[2], row[3]
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS}, not_before FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
        (first, upto, limit),
    ).fetchall()
    stamp = to_micros(now)
    deliveries = []
    keys = OrderingKeys(conn)
    for event_row in rows:
        stored = event_from_row(event_row)
        document = filter_document(stored.event) if matcher.filter is not None else None
        if matcher.matches(stored.event, document):
            due = backfill_due(row[5], row[6], stamp, event_row[13])
            key = matcher.key_of(stored.event)
            deliveries.append(
                (new_id("dlv"), subscription_id, stored.seq, due, stamp, key, keys.blocked(subscription_id, key))
            )
    if deliveries:
        conn.executemany(INSERT_DELIVERY, deliveries)
    next_seq = rows[-1][0] + 1 if len(rows) == limit else None
    if next_seq is not None and next_seq > upto:
        next_seq = None
    conn.execute(
        "UPDATE subscriptions SET backfill_next_seq = ?, backfill_patterns = CASE WHEN ? IS NULL THEN NULL "
        "ELSE backfill_patterns END WHERE id = ?",
        (next_seq, next_seq, subscription_id),
    )
    # Finishing wakes the subscription's waiters too: a group's leases no longer hold back what came after.
    return next_seq is not None, bool(deliveries) or next_seq is None


def seek_subscription(
    conn: sqlite3.Connection, cache: SubscriptionCache, subscription_id: str, *, start: StartPosition, now: datetime
) -> None:
    exists = conn.execute(
        "SELECT 1 FROM subscriptions WHERE id = ? AND state != 'deleted'", (subscription_id,)
    ).fetchone()
    if exists is None:
        raise NotFoundError(f"subscription {subscription_id} does not exist")
    conn.execute(
        "DELETE FROM deliveries WHERE subscription_id = ? AND state IN ('pending', 'leased')", (subscription_id,)
    )
    upto = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    first = _start_seq(conn, start)
    backfill_from = first if first is not None and first <= upto else None
    start_seq, start_at = _start_bounds(start)
    conn.execute(
        "UPDATE subscriptions SET backfill_next_seq = ?, backfill_upto_seq = ?, start_seq = ?, start_at = ?, "
        "updated_at = ? WHERE id = ?",
        (
            backfill_from,
            upto if backfill_from is not None else None,
            start_seq,
            start_at,
            to_micros(now),
            subscription_id,
        ),
    )
    cache.invalidate()
