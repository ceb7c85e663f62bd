"""Operator actions of the SQLite store: subscription state and settings, delivery reads, resend, recover, replay."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.errors import ConcurrentUpdateError, FailedPreconditionError, NotFoundError
from eventbus.store.base import Ordering, SubscriptionState
from eventbus.store.records import DeliveryQuery, DeliveryRecord, HealthChange, HealthChangeKind
from eventbus.store.rows import schedule_to_text
from eventbus.store.sqlite_fanout import SubscriptionCache, recompute_blocked

DELIVERY_COLUMNS = (
    "d.delivery_id, d.subscription_id, e.event_id, d.event_seq, d.state, d.attempts, d.next_attempt_at, "
    "d.first_attempt_at, d.last_attempt_at, d.created_at, d.finished_at, d.dead_reason, d.last_error, "
    "d.ordering_key, d.manual"
)
_FROM = "FROM deliveries d JOIN events e ON e.seq = d.event_seq"
# Settings an operator may change on a live subscription (the service layer validates the values).
UPDATABLE = frozenset(
    {"patterns", "filter", "retry_schedule", "max_pending_age", "options", "rate_limit", "max_concurrency", "secrets"}
)


def _moment(value: int | None) -> datetime | None:
    return from_micros(value) if value is not None else None


def delivery_from_row(row: Any) -> DeliveryRecord:
    (delivery_id, sub_id, event_id, seq, state, attempts, next_at, first, last, created, finished) = row[:11]
    dead_reason, last_error, key, manual = row[11:]
    return DeliveryRecord(
        delivery_id=delivery_id,
        subscription_id=sub_id,
        event_id=event_id,
        event_seq=seq,
        state=state,
        attempts=attempts,
        next_attempt_at=_moment(next_at) if state in ("pending", "leased") else None,
        first_attempt_at=_moment(first),
        last_attempt_at=_moment(last),
        created_at=from_micros(created),
        finished_at=_moment(finished),
        dead_reason=dead_reason,
        last_error=last_error,
        ordering_key=key,
        manual=bool(manual),
    )


def get_delivery(conn: sqlite3.Connection, delivery_id: str) -> DeliveryRecord | None:
    row = conn.execute(f"SELECT {DELIVERY_COLUMNS} {_FROM} WHERE d.delivery_id = ?", (delivery_id,)).fetchone()
    return delivery_from_row(row) if row else None


def list_deliveries(conn: sqlite3.Connection, query: DeliveryQuery) -> list[DeliveryRecord]:
    clauses: list[str] = []
    params: list[str] = []
    if query.after_id:
        clauses.append("d.delivery_id < ?" if query.newest_first else "d.delivery_id > ?")
        params.append(query.after_id)
    if query.subscription_id is not None:
        clauses.append("d.subscription_id = ?")
        params.append(query.subscription_id)
    if query.event_seq is not None:
        clauses.append("d.event_seq = ?")
        params.append(str(query.event_seq))
    if query.state is not None:
        clauses.append("d.state = ?")
        params.append(query.state)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "DESC" if query.newest_first else "ASC"
    sql = f"SELECT {DELIVERY_COLUMNS} {_FROM} {where} ORDER BY d.delivery_id {order} LIMIT ?"
    return [delivery_from_row(row) for row in conn.execute(sql, (*params, query.limit))]


def ordering_blocker(conn: sqlite3.Connection, delivery: DeliveryRecord) -> DeliveryRecord | None:
    """The earlier delivery of the same subject that holds this one back (ordering = subject), if any."""
    if delivery.ordering_key is None or delivery.state not in ("pending", "leased"):
        return None
    row = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} {_FROM} WHERE d.subscription_id = ? AND d.ordering_key = ? "
        "AND d.state IN ('pending', 'leased') AND d.event_seq < ? ORDER BY d.event_seq LIMIT 1",
        (delivery.subscription_id, delivery.ordering_key, delivery.event_seq),
    ).fetchone()
    return delivery_from_row(row) if row else None


def _require(conn: sqlite3.Connection, subscription_id: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT state, kind FROM subscriptions WHERE id = ? AND state != 'deleted'", (subscription_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"subscription {subscription_id} does not exist")
    return str(row[0]), str(row[1])


def set_state(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    subscription_id: str,
    state: SubscriptionState,
    *,
    reason: str | None,
    now: datetime,
) -> list[HealthChange]:
    """Pause, resume, disable or enable. Leaving `disabled` starts the health record afresh (circuit closed)."""
    previous, kind = _require(conn, subscription_id)
    stamp = to_micros(now)
    conn.execute(
        "UPDATE subscriptions SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?",
        (state.value, reason, stamp, subscription_id),
    )
    changes: list[HealthChange] = []
    if previous == SubscriptionState.DISABLED and state != SubscriptionState.DISABLED:
        conn.execute(
            "UPDATE subscriptions SET circuit = 'closed', consecutive_failures = 0, failing_since = NULL, "
            "warnings_sent = 0, circuit_opened_at = NULL, next_probe_at = NULL, failed_probes = 0, alerted = 0 "
            "WHERE id = ?",
            (subscription_id,),
        )
        changes.append(HealthChange(HealthChangeKind.ENABLED, subscription_id, kind, now, {"was": previous}))
    elif state == SubscriptionState.DISABLED and previous != SubscriptionState.DISABLED:
        changes.append(HealthChange(HealthChangeKind.DISABLED, subscription_id, kind, now, {"reason": reason}))
    cache.invalidate()
    return changes


def update_subscription(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    subscription_id: str,
    fields: dict[str, object],
    now: datetime,
    if_updated_at: datetime | None = None,
) -> None:
    _require(conn, subscription_id)
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if if_updated_at is not None:
        row = conn.execute("SELECT updated_at FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
        if row[0] != to_micros(if_updated_at):
            raise ConcurrentUpdateError(f"subscription {subscription_id} changed meanwhile")
    if not fields:
        return
    stamp = max(to_micros(now), (to_micros(if_updated_at) + 1) if if_updated_at is not None else 0)
    assignments = ", ".join(f"{column} = ?" for column in fields)
    conn.execute(
        f"UPDATE subscriptions SET {assignments}, updated_at = ? WHERE id = ?",
        (*fields.values(), stamp, subscription_id),
    )
    cache.invalidate()


def resend(conn: sqlite3.Connection, delivery_id: str, now: datetime) -> DeliveryRecord:
    """A new attempt now, outside the schedule: a finished delivery gets one manual attempt, a pending one is due."""
    found = get_delivery(conn, delivery_id)
    if found is None:
        raise NotFoundError(f"delivery {delivery_id} does not exist")
    state, _ = _require(conn, found.subscription_id)
    if state == SubscriptionState.DISABLED:
        raise FailedPreconditionError(
            f"subscription {found.subscription_id} is disabled: enable it (resume) before resending"
        )
    if found.state == "leased":
        raise FailedPreconditionError(f"delivery {delivery_id} is being attempted right now")
    stamp = to_micros(now)
    manual = 1 if found.state in ("dead", "succeeded") else 0
    conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, queued_at = ?, manual = ?, finished_at = NULL, "
        "dead_reason = NULL WHERE delivery_id = ?",
        (stamp, stamp, manual, delivery_id),
    )
    if found.ordering_key is not None:
        recompute_blocked(conn, found.subscription_id)
    record = get_delivery(conn, delivery_id)
    assert record is not None
    return record


def recover(
    conn: sqlite3.Connection,
    subscription_id: str,
    *,
    since: datetime,
    include_pending: bool,
    limit: int,
    now: datetime,
) -> list[tuple[str, str]]:
    """Re-queue dead deliveries (and, if asked, pending ones: due now) created since `since`, with a fresh schedule.

    Returns (delivery_id, event_id) of each, oldest first, at most `limit`.
    """
    _require(conn, subscription_id)
    stamp = to_micros(now)
    states = "('dead', 'pending')" if include_pending else "('dead')"
    # Called in chunks with the same `now`: what an earlier chunk re-queued (queued_at = now) is not taken again.
    rows = conn.execute(
        f"SELECT d.rowid, d.delivery_id, e.event_id {_FROM} WHERE d.subscription_id = ? AND d.state IN {states} "
        "AND d.created_at >= ? AND COALESCE(d.queued_at, 0) != ? ORDER BY d.event_seq LIMIT ?",
        (subscription_id, to_micros(since), stamp, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, queued_at = ?, manual = 0, "
        "finished_at = NULL, dead_reason = NULL WHERE rowid = ?",
        [(stamp, stamp, row[0]) for row in rows],
    )
    if (
        rows
        and conn.execute("SELECT ordering FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()[0]
        == Ordering.SUBJECT
    ):
        recompute_blocked(conn, subscription_id)
    return [(row[1], row[2]) for row in rows]


def replay(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    subscription_id: str,
    *,
    patterns: list[str] | None,
    since: datetime,
    now: datetime,
) -> int:
    """Start a backfill of the events received since `since` (matching `patterns`, else the subscription's own).

    Returns the last seq it covers (0: nothing to replay)."""
    _require(conn, subscription_id)
    busy = conn.execute("SELECT backfill_next_seq FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    if busy[0] is not None:
        raise FailedPreconditionError(f"subscription {subscription_id} is already backfilling; retry when it is done")
    first = conn.execute("SELECT MIN(seq) FROM events WHERE received_at >= ?", (to_micros(since),)).fetchone()[0]
    upto = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    if first is None:
        return 0
    conn.execute(
        "UPDATE subscriptions SET backfill_next_seq = ?, backfill_upto_seq = ?, backfill_patterns = ?, updated_at = ? "
        "WHERE id = ?",
        (first, upto, json.dumps(patterns) if patterns else None, to_micros(now), subscription_id),
    )
    cache.invalidate()
    return int(upto)


_COLUMN_OF = {"filter_json": "filter"}


def column_of(name: str) -> str:
    """The column that holds a subscription attribute."""
    return _COLUMN_OF.get(name, name)


def column_value(name: str, value: object) -> object:
    """A subscription attribute as its column stores it."""
    if name == "patterns":
        assert isinstance(value, tuple | list)
        return json.dumps(list(value))
    if name == "retry_schedule":
        assert isinstance(value, tuple)
        return schedule_to_text(value)
    if name == "max_pending_age":
        assert isinstance(value, timedelta)
        return value // timedelta(microseconds=1)
    if name in ("options", "secrets"):
        return json.dumps(value, sort_keys=True)
    return value
