"""Delivery operations of the SQLite store: leases, settlements, releases, stats and retention."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from eventbus.clock import from_micros, to_micros
from eventbus.store.base import DeadReason, LeasedDelivery, Settle, Settlement, SubscriptionStats
from eventbus.store.rows import EVENT_COLUMNS, event_from_row
from eventbus.store.sqlite_fanout import promote_next
from eventbus.store.sqlite_subscriptions import backlog_end


def lease_deliveries(
    conn: sqlite3.Connection,
    subscription_id: str,
    *,
    limit: int,
    lease_for: timedelta,
    now: datetime,
) -> tuple[list[LeasedDelivery], list[tuple[str, int, str]]]:
    """The leases, and the deliveries that died instead: (delivery_id, event_seq, reason)."""
    stamp = to_micros(now)
    policy = conn.execute(
        "SELECT retry_schedule, max_pending_age, circuit, next_probe_at, kind, backfill_next_seq FROM subscriptions "
        "WHERE id = ? AND state = 'active'",
        (subscription_id,),
    ).fetchone()
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
        lease_at_most, limit = 1, max(limit, 64)
    sql = (
        "SELECT d.rowid, d.delivery_id, d.attempts, d.first_attempt_at, "
        "MAX(d.created_at, COALESCE(e.not_before, 0), COALESCE(d.queued_at, 0)), d.manual, d.ordering_key, "
        f"{', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))} "
        "FROM deliveries d JOIN events e ON e.seq = d.event_seq "
        # ordering = subject: a delivery behind an open one of its subject is `blocked` until that one finishes
        f"WHERE d.subscription_id = ? AND d.state IN ('pending', 'leased') AND d.blocked = 0 {gate}"
        "AND d.event_seq < ? AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.event_seq LIMIT ?"
    )
    expires = stamp + lease_for // timedelta(microseconds=1)
    leased: list[LeasedDelivery] = []
    died: list[tuple[str, int, str]] = []
    # Rows that die here (exhausted, expired) do not fill the lease: read on past them, a bounded number of rounds,
    # so a dead backlog in front does not make the caller think there is nothing to send.
    for _ in range(10):
        wanted = limit if probe else limit - len(leased)
        rows = conn.execute(sql, (subscription_id, held_from, stamp, wanted)).fetchall()
        updates, dead, dead_keys = [], [], []
        for row in rows:
            rowid, delivery_id, attempts, first_attempt, pending_since, manual, key = row[:7]
            reason = None
            if attempts >= max_attempts and not manual:
                reason = DeadReason.EXHAUSTED
            elif pending_since < oldest_allowed:  # age counts from when it was first due (not_before, a recovery)
                reason = DeadReason.EXPIRED
            if reason is not None:
                dead.append((reason.value, stamp, rowid))
                died.append((delivery_id, row[7], reason.value))
                dead_keys.append(key)
                continue
            if len(leased) >= lease_at_most:
                continue
            token = secrets.randbits(62)
            first_attempt = first_attempt or stamp
            updates.append((attempts + 1, expires, token, first_attempt, stamp, rowid))
            leased.append(
                LeasedDelivery(
                    delivery_id=delivery_id,
                    subscription_id=subscription_id,
                    event=event_from_row(row, offset=7),
                    attempt=attempts + 1,
                    first_attempt_at=from_micros(first_attempt),
                    lease_token=token,
                    lease_expires_at=from_micros(expires),
                    probe=probe,
                    manual=bool(manual),
                    pending_since=from_micros(pending_since),
                )
            )
        if updates:
            conn.executemany(
                "UPDATE deliveries SET state = 'leased', attempts = ?, next_attempt_at = ?, lease_token = ?, "
                "first_attempt_at = ?, last_attempt_at = ? WHERE rowid = ?",
                updates,
            )
        if dead:
            conn.executemany(
                "UPDATE deliveries SET state = 'dead', dead_reason = ?, finished_at = ?, lease_token = NULL "
                "WHERE rowid = ?",
                dead,
            )
            for key in dead_keys:
                if key is not None:
                    promote_next(conn, subscription_id, key)
        if not dead or len(leased) >= lease_at_most or len(rows) < wanted:
            break
    if probe and leased:
        conn.execute("UPDATE subscriptions SET next_probe_at = ? WHERE id = ?", (expires, subscription_id))
    return leased, died


def settle_deliveries(
    conn: sqlite3.Connection, settles: Sequence[Settle], *, now: datetime
) -> tuple[list[bool], set[str]]:
    stamp = to_micros(now)
    results, touched = [], set()
    for settle in settles:
        if settle.outcome is Settlement.SUCCEEDED:
            sql = (
                "UPDATE deliveries SET state = 'succeeded', finished_at = ?, lease_token = NULL, last_error = NULL, "
                "dead_reason = NULL, manual = 0"
            )
            params: tuple[Any, ...] = (stamp,)
        elif settle.outcome is Settlement.RETRY:
            sql = (
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_token = NULL, last_error = ?, "
                "manual = 0"
            )
            params = (to_micros(settle.retry_at or now), settle.error)
        else:
            sql = (
                "UPDATE deliveries SET state = 'dead', finished_at = ?, lease_token = NULL, dead_reason = ?, "
                "last_error = ?, manual = 0"
            )
            params = (stamp, (settle.reason or DeadReason.DROPPED).value, settle.error)
        row = conn.execute(
            f"{sql} WHERE delivery_id = ? AND state = 'leased' AND lease_token = ? "
            "RETURNING subscription_id, ordering_key",
            (*params, settle.delivery_id, settle.lease_token),
        ).fetchone()
        results.append(row is not None)
        # A retry changes when the subscription is next due; a finished head of a subject (ordering) lets the
        # next delivery of that subject go now: wake the dispatcher for both rather than wait for its next poll.
        if row is not None and (settle.outcome is Settlement.RETRY or row[1] is not None):
            touched.add(row[0])
        if row is not None and row[1] is not None and settle.outcome is not Settlement.RETRY:
            promote_next(conn, row[0], row[1])
    return results, touched


def release_leases(
    conn: sqlite3.Connection, leases: Sequence[tuple[str, int]], *, now: datetime, unsent: bool = False
) -> tuple[int, set[str]]:
    stamp = to_micros(now)
    released, touched = 0, set()
    for delivery_id, token in leases:
        row = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_token = NULL, "
            "attempts = attempts - ? "
            "WHERE delivery_id = ? AND state = 'leased' AND lease_token = ? RETURNING subscription_id",
            (stamp, int(unsent), delivery_id, token),
        ).fetchone()
        if row is not None:
            released += 1
            touched.add(row[0])
    return released, touched


def subscription_stats(conn: sqlite3.Connection, subscription_id: str) -> SubscriptionStats:
    counts = dict.fromkeys(("pending", "leased", "succeeded", "dead"), 0)
    for state, count in conn.execute(
        "SELECT state, COUNT(*) FROM deliveries WHERE subscription_id = ? GROUP BY state", (subscription_id,)
    ):
        counts[state] = count
    row = conn.execute(
        "SELECT MIN(created_at) FROM deliveries WHERE subscription_id = ? AND state IN ('pending', 'leased')",
        (subscription_id,),
    ).fetchone()
    oldest = from_micros(row[0]) if row[0] is not None else None
    return SubscriptionStats(counts["pending"], counts["leased"], counts["succeeded"], counts["dead"], oldest)


def prune(conn: sqlite3.Connection, *, older_than: datetime, limit: int) -> int:
    cutoff = to_micros(older_than)
    removed = conn.execute(
        "DELETE FROM attempts WHERE rowid IN (SELECT rowid FROM attempts WHERE started_at < ? LIMIT ?)",
        (cutoff, limit),
    ).rowcount
    removed += conn.execute(
        "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries "
        "WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?)",
        (cutoff, limit),
    ).rowcount
    # Events a subscription's unfinished backfill (a join at earliest, a seek) still has to read are kept.
    removed += conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE received_at < ? AND seq < "
        "(SELECT COALESCE(MIN(backfill_next_seq), 9223372036854775807) FROM subscriptions "
        "WHERE backfill_next_seq IS NOT NULL AND state != 'deleted') AND NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq) ORDER BY seq LIMIT ?)",
        (cutoff, limit),
    ).rowcount
    return removed
