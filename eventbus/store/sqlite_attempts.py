"""The attempt log of the SQLite store: one attempt, its settlement and the subscription's health in one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.ids import new_id
from eventbus.store import sqlite_deliveries as deliveries
from eventbus.store import sqlite_fanout as fanout
from eventbus.store.base import Settlement
from eventbus.store.health_rules import HEALTH_COLUMNS, decide_health
from eventbus.store.records import (
    Attempt,
    AttemptResult,
    HealthChange,
    HealthChangeKind,
    HealthPolicy,
    SystemEvents,
)

ATTEMPT_COLUMNS = (
    "attempt_id, delivery_id, subscription_id, number, started_at, duration_us, status_code, error_class, error, "
    "response_headers, response_body, outcome, next_attempt_at, probe, manual"
)
DEDUP_WINDOW = timedelta(hours=24)


def attempt_from_row(row: Any) -> Attempt:
    (attempt_id, delivery_id, sub_id, number, started, duration, status, error_class, error, headers, body) = row[:11]
    outcome, next_at, probe, manual = row[11:]
    return Attempt(
        attempt_id=attempt_id,
        delivery_id=delivery_id,
        subscription_id=sub_id,
        number=number,
        started_at=from_micros(started),
        duration=timedelta(microseconds=duration),
        status_code=status,
        error_class=error_class,
        error=error,
        response_headers=tuple((k, v) for k, v in json.loads(headers or "[]")),
        response_body=bytes(body or b""),
        outcome=outcome,
        next_attempt_at=from_micros(next_at) if next_at is not None else None,
        probe=bool(probe),
        manual=bool(manual),
    )


def append_system_events(
    conn: sqlite3.Connection,
    cache: fanout.SubscriptionCache,
    changes: Sequence[HealthChange],
    system_events: SystemEvents | None,
    *,
    now: datetime,
) -> set[str]:
    """Publish the changes as system events inside the caller's transaction; the subscriptions to wake."""
    if not changes or system_events is None:
        return set()
    events = system_events(changes)
    if not events:
        return set()
    _, touched = fanout.append(conn, cache, events, now=now, not_before=None, window=DEDUP_WINDOW)
    return touched


def _subscription_kind(conn: sqlite3.Connection, subscription_id: str) -> str:
    row = conn.execute("SELECT kind FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    return str(row[0]) if row else ""


def dead_changes(
    conn: sqlite3.Connection, subscription_id: str, died: Sequence[tuple[str, int, str]], now: datetime
) -> list[HealthChange]:
    """`delivery_dead` for deliveries that died, except deliveries of system events (no echo between watchers)."""
    changes = []
    kind = _subscription_kind(conn, subscription_id) if died else ""
    for delivery_id, seq, reason in died:
        row = conn.execute("SELECT event_id, type FROM events WHERE seq = ?", (seq,)).fetchone()
        if row is None or str(row[1]).startswith("eventbus."):
            continue
        detail = {"delivery_id": delivery_id, "event_id": row[0], "reason": reason}
        changes.append(HealthChange(HealthChangeKind.DELIVERY_DEAD, subscription_id, kind, now, detail))
    return changes


def record_attempt(
    conn: sqlite3.Connection,
    cache: fanout.SubscriptionCache,
    result: AttemptResult,
    *,
    policy: HealthPolicy,
    now: datetime,
    system_events: SystemEvents | None,
) -> tuple[bool, list[HealthChange], set[str]]:
    """Record the attempt, apply its settlement and the health rules; (lease still held, changes, woken)."""
    settle = result.settle
    [applied], touched = deliveries.settle_deliveries(conn, [settle], now=now)
    row = conn.execute(
        "SELECT subscription_id, event_seq FROM deliveries WHERE delivery_id = ?", (settle.delivery_id,)
    ).fetchone()
    if row is None:
        return False, [], set()
    subscription_id, event_seq = row
    outcome = settle.outcome.value if applied else "lease_lost"
    next_at = settle.retry_at if applied and settle.outcome is Settlement.RETRY else None
    conn.execute(
        f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
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
        ),
    )
    if not applied:
        return False, [], touched
    changes = _apply_health(conn, subscription_id, result, policy, now)
    if settle.outcome is Settlement.DEAD:
        reason = (settle.reason.value if settle.reason else "dropped",)
        changes += dead_changes(conn, subscription_id, [(settle.delivery_id, event_seq, reason[0])], now)
    touched |= append_system_events(conn, cache, changes, system_events, now=now)
    if any(c.kind in (HealthChangeKind.CIRCUIT_CLOSED, HealthChangeKind.DISABLED) for c in changes):
        cache.invalidate()
    if any(c.kind is not HealthChangeKind.DELIVERY_DEAD for c in changes):
        touched.add(subscription_id)  # its state or circuit changed: whoever sends for it must look again
    return True, changes, touched


def _apply_health(
    conn: sqlite3.Connection, subscription_id: str, result: AttemptResult, policy: HealthPolicy, now: datetime
) -> list[HealthChange]:
    row = conn.execute(f"SELECT {HEALTH_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    if row is None:
        return []
    updates, changes = decide_health(subscription_id, row, result, policy, now)
    if updates:
        assignments = ", ".join(f"{column} = ?" for column in updates)
        conn.execute(f"UPDATE subscriptions SET {assignments} WHERE id = ?", (*updates.values(), subscription_id))
    return changes
