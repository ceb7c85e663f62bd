"""The SQLite store's write operations, each run inside the writer's transaction (see `sqlite_writer`)."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from eventbus.clock import from_micros, to_micros
from eventbus.errors import InvalidArgumentError, NotFoundError
from eventbus.filters import ContentFilter
from eventbus.ids import new_id
from eventbus.model import Event, filter_document
from eventbus.patterns import PatternSet
from eventbus.store.base import (
    AppendOutcome,
    DeadReason,
    LeasedDelivery,
    Settle,
    Settlement,
    StartPosition,
    Subscription,
    SubscriptionSpec,
    SubscriptionStats,
)
from eventbus.store.rows import (
    EVENT_COLUMNS,
    event_from_row,
    event_params,
    schedule_from_text,
    schedule_to_text,
)

log = structlog.get_logger("eventbus.store")

SUBSCRIPTION_COLUMNS = (
    "id, kind, name, patterns, filter, retry_schedule, max_pending_age, ephemeral, state, created_at, "
    "last_active_at, options, backfill_next_seq"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (delivery_id, subscription_id, event_seq, state, next_attempt_at, created_at) "
    "VALUES (?, ?, ?, 'pending', ?, ?)"
)


def subscription_from_row(row: Any) -> Subscription:
    (id_, kind, name, patterns, filter_, schedule, max_age, ephemeral, state, created, active, options, backfill) = row
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
    )


@dataclass(frozen=True, slots=True)
class _Matcher:
    subscription_id: str
    patterns: PatternSet
    filter: ContentFilter | None
    start_seq: int = 0  # events before a start position that lay past the end of the log are not for it
    start_at: int = 0

    @classmethod
    def of(
        cls,
        subscription_id: str,
        patterns: Sequence[str],
        filter_json: str | None,
        start_seq: int = 0,
        start_at: int = 0,
    ) -> _Matcher:
        return cls(subscription_id, PatternSet.parse(patterns), ContentFilter.parse(filter_json), start_seq, start_at)

    def starts_after(self, seq: int, received_at: int) -> bool:
        return seq < self.start_seq or received_at < self.start_at

    def matches(self, event: Event, document: dict[str, object] | None) -> bool:
        if not self.patterns.matches(event.type):
            return False
        return self.filter is None or (document is not None and self.filter.matches(document))


class SubscriptionCache:
    """The compiled matchers of live subscriptions, owned by the writer thread.

    Every operation that changes subscriptions invalidates it; so does any failed operation or commit (its
    changes were rolled back). It is reloaded inside the next transaction that needs it, so it always agrees
    with what that transaction sees.
    """

    def __init__(self) -> None:
        self._matchers: list[_Matcher] | None = None

    def invalidate(self) -> None:
        self._matchers = None

    def matchers(self, conn: sqlite3.Connection) -> list[_Matcher]:
        if self._matchers is None:
            rows = conn.execute(
                "SELECT id, patterns, filter, start_seq, start_at FROM subscriptions WHERE state = 'active'"
            ).fetchall()
            self._matchers = []
            for id_, patterns, filter_json, start_seq, start_at in rows:
                try:
                    matcher = _Matcher.of(id_, json.loads(patterns), filter_json, start_seq or 0, start_at or 0)
                except InvalidArgumentError as exc:
                    # A stored filter this version cannot compile must not stop every publish: that
                    # subscription gets nothing until it is fixed, and says so in the log.
                    log.error("subscription_filter_invalid", subscription_id=id_, error=exc.message)
                    continue
                self._matchers.append(matcher)
        return self._matchers


def _latest_by_key(conn: sqlite3.Connection, events: Sequence[Event]) -> dict[tuple[str, str], tuple[str, int, int]]:
    """(source, id) → (event_id, seq, received_at) of the latest stored event, for every pair in `events`.

    One indexed query per source and 500 ids instead of one per event: the dedup check of a batch.
    """
    ids_by_source: dict[str, list[str]] = {}
    for event in events:
        ids_by_source.setdefault(event.source, []).append(event.id)
    found: dict[tuple[str, str], tuple[str, int, int]] = {}
    for source, ids in ids_by_source.items():
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = conn.execute(
                "SELECT id, event_id, seq, received_at FROM events WHERE source = ? AND id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY seq",
                (source, *chunk),
            )
            for id_, event_id, seq, received_at in rows:
                found[(source, id_)] = (event_id, seq, received_at)  # ascending seq: the latest one wins
    return found


def append(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    events: Sequence[Event],
    *,
    now: datetime,
    not_before: datetime | None,
    window: timedelta,
) -> tuple[list[AppendOutcome], set[str]]:
    stamp = to_micros(now)
    due = max(stamp, to_micros(not_before)) if not_before is not None else stamp
    horizon = to_micros(now - window)
    matchers = cache.matchers(conn)
    needs_document = any(m.filter is not None for m in matchers)
    stored = _latest_by_key(conn, events)
    # One writer owns the file, so seqs can be handed out here and the rows inserted in one executemany;
    # AUTOINCREMENT's counter still moves with them, so a seq is never reused.
    # The larger of AUTOINCREMENT's counter and the highest row, as AUTOINCREMENT itself does (a restored
    # file may lack the counter); MAX on the primary key is one index look-up.
    seq = conn.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
        "COALESCE((SELECT MAX(seq) FROM events), 0))"
    ).fetchone()[0]
    outcomes: list[AppendOutcome] = []
    touched: set[str] = set()
    seen: dict[tuple[str, str], AppendOutcome] = {}
    rows: list[tuple[object, ...]] = []
    deliveries: list[tuple[str, str, int, int, int]] = []
    for event in events:
        key = (event.source, event.id)
        earlier = seen.get(key)
        if earlier is not None:
            outcomes.append(AppendOutcome(earlier.event_id, earlier.seq, duplicate=True))
            continue
        previous = stored.get(key)
        if previous is not None and previous[2] >= horizon:
            outcome = AppendOutcome(previous[0], previous[1], duplicate=True)
            outcomes.append(outcome)
            seen[key] = outcome
            continue
        seq += 1
        event_id = new_id("evt")
        rows.append((seq, event_id, *event_params(event), stamp, due if due != stamp else None))
        outcome = AppendOutcome(event_id, seq, duplicate=False)
        outcomes.append(outcome)
        seen[key] = outcome
        document = filter_document(event) if needs_document else None
        for matcher in matchers:
            if matcher.matches(event, document) and not matcher.starts_after(seq, stamp):
                deliveries.append((new_id("dlv"), matcher.subscription_id, seq, due, stamp))
                touched.add(matcher.subscription_id)
    if rows:
        conn.executemany(
            "INSERT INTO events (seq, event_id, source, id, type, subject, time, datacontenttype, dataschema, "
            "extensions, data, data_kind, received_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    if deliveries:
        conn.executemany(_INSERT_DELIVERY, deliveries)
    return outcomes, touched


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
        "options, created_at, updated_at, last_active_at, backfill_next_seq, backfill_upto_seq, start_seq, start_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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


def purge_deleted(conn: sqlite3.Connection, *, limit: int) -> int:
    removed = conn.execute(
        "DELETE FROM deliveries WHERE rowid IN (SELECT d.rowid FROM deliveries d JOIN subscriptions s "
        "ON s.id = d.subscription_id WHERE s.state = 'deleted' LIMIT ?)",
        (limit,),
    ).rowcount
    if removed < limit:
        removed += conn.execute(
            "DELETE FROM subscriptions WHERE id IN (SELECT id FROM subscriptions WHERE state = 'deleted' AND "
            "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = subscriptions.id) LIMIT ?)",
            (limit - removed,),
        ).rowcount
    return removed


def backfill(
    conn: sqlite3.Connection, cache: SubscriptionCache, subscription_id: str, *, now: datetime, limit: int
) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT patterns, filter, backfill_next_seq, backfill_upto_seq FROM subscriptions "
        "WHERE id = ? AND state != 'deleted'",
        (subscription_id,),
    ).fetchone()
    if row is None or row[2] is None:
        return False, False
    matcher = _Matcher.of(subscription_id, json.loads(row[0]), row[1])
    first, upto = row[2], row[3]
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS}, not_before FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
        (first, upto, limit),
    ).fetchall()
    stamp = to_micros(now)
    deliveries = []
    for event_row in rows:
        stored = event_from_row(event_row)
        document = filter_document(stored.event) if matcher.filter is not None else None
        if matcher.matches(stored.event, document):
            due = max(stamp, event_row[13] or 0)
            deliveries.append((new_id("dlv"), subscription_id, stored.seq, due, stamp))
    if deliveries:
        conn.executemany(_INSERT_DELIVERY, deliveries)
    next_seq = rows[-1][0] + 1 if len(rows) == limit else None
    if next_seq is not None and next_seq > upto:
        next_seq = None
    conn.execute("UPDATE subscriptions SET backfill_next_seq = ? WHERE id = ?", (next_seq, subscription_id))
    return next_seq is not None, bool(deliveries)


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


def lease_deliveries(
    conn: sqlite3.Connection, subscription_id: str, *, limit: int, lease_for: timedelta, now: datetime
) -> list[LeasedDelivery]:
    stamp = to_micros(now)
    policy = conn.execute(
        "SELECT retry_schedule, max_pending_age FROM subscriptions WHERE id = ? AND state = 'active'",
        (subscription_id,),
    ).fetchone()
    if policy is None:
        return []
    max_attempts = len(json.loads(policy[0])) + 1
    oldest_allowed = stamp - policy[1]
    rows = conn.execute(
        "SELECT d.rowid, d.delivery_id, d.attempts, d.first_attempt_at, "
        "MAX(d.created_at, COALESCE(e.not_before, 0)), "
        f"{', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))} "
        "FROM deliveries d JOIN events e ON e.seq = d.event_seq "
        "WHERE d.subscription_id = ? AND d.state IN ('pending', 'leased') AND d.next_attempt_at <= ? "
        "ORDER BY d.next_attempt_at, d.event_seq LIMIT ?",
        (subscription_id, stamp, limit),
    ).fetchall()
    expires = stamp + lease_for // timedelta(microseconds=1)
    leased: list[LeasedDelivery] = []
    updates, dead = [], []
    for row in rows:
        rowid, delivery_id, attempts, first_attempt, pending_since = row[:5]
        if attempts >= max_attempts:
            dead.append((DeadReason.EXHAUSTED.value, stamp, rowid))
            continue
        if pending_since < oldest_allowed:  # age counts from when it was first due (not_before)
            dead.append((DeadReason.EXPIRED.value, stamp, rowid))
            continue
        token = secrets.randbits(62)
        first_attempt = first_attempt or stamp
        updates.append((attempts + 1, expires, token, first_attempt, stamp, rowid))
        leased.append(
            LeasedDelivery(
                delivery_id=delivery_id,
                subscription_id=subscription_id,
                event=event_from_row(row, offset=5),
                attempt=attempts + 1,
                first_attempt_at=from_micros(first_attempt),
                lease_token=token,
                lease_expires_at=from_micros(expires),
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
    return leased


def settle_deliveries(
    conn: sqlite3.Connection, settles: Sequence[Settle], *, now: datetime
) -> tuple[list[bool], set[str]]:
    stamp = to_micros(now)
    results, touched = [], set()
    for settle in settles:
        if settle.outcome is Settlement.SUCCEEDED:
            sql = "UPDATE deliveries SET state = 'succeeded', finished_at = ?, lease_token = NULL, last_error = NULL"
            params: tuple[Any, ...] = (stamp,)
        elif settle.outcome is Settlement.RETRY:
            sql = "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_token = NULL, last_error = ?"
            params = (to_micros(settle.retry_at or now), settle.error)
        else:
            sql = (
                "UPDATE deliveries SET state = 'dead', finished_at = ?, lease_token = NULL, dead_reason = ?, "
                "last_error = ?"
            )
            params = (stamp, (settle.reason or DeadReason.DROPPED).value, settle.error)
        row = conn.execute(
            f"{sql} WHERE delivery_id = ? AND state = 'leased' AND lease_token = ? RETURNING subscription_id",
            (*params, settle.delivery_id, settle.lease_token),
        ).fetchone()
        results.append(row is not None)
        if row is not None and settle.outcome is Settlement.RETRY:
            touched.add(row[0])
    return results, touched


def release_leases(
    conn: sqlite3.Connection, leases: Sequence[tuple[str, int]], *, now: datetime
) -> tuple[int, set[str]]:
    stamp = to_micros(now)
    released, touched = 0, set()
    for delivery_id, token in leases:
        row = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_token = NULL "
            "WHERE delivery_id = ? AND state = 'leased' AND lease_token = ? RETURNING subscription_id",
            (stamp, delivery_id, token),
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
