"""Fan-out at append: the compiled matchers of live subscriptions, and the append operation that uses them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from eventbus.clock import to_micros
from eventbus.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from eventbus.filters import ContentFilter
from eventbus.ids import new_id
from eventbus.model import DataKind, Event, filter_document
from eventbus.patterns import PatternSet, is_system_type
from eventbus.store.base import AppendOutcome
from eventbus.store.rows import event_params
from eventbus.store.types import MAX_SAMPLE_BYTES

log = structlog.get_logger("eventbus.store")

INSERT_DELIVERY = (
    "INSERT INTO deliveries (delivery_id, subscription_id, event_seq, state, next_attempt_at, created_at, "
    "ordering_key, blocked) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)"
)
Delivery = tuple[str, str, int, int, int, str | None, int]
# One row per distinct type of an append: counts add up, the last event of the batch becomes the sample.
UPSERT_EVENT_TYPE = (
    "INSERT INTO event_types (type, count, first_seen, last_seen, sample_event_id, sample, sample_omitted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type) DO UPDATE SET count = count + excluded.count, "
    "first_seen = COALESCE(first_seen, excluded.first_seen), last_seen = excluded.last_seen, "
    "sample_event_id = excluded.sample_event_id, sample = excluded.sample, sample_omitted = excluded.sample_omitted"
)


class OrderingKeys:
    """Which new deliveries of ordered subscriptions must wait: an earlier one of the same key is still open.

    One indexed look-up per (subscription, key) per transaction; keys opened by this transaction count too.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._open: set[tuple[str, str]] = set()
        self._checked: set[tuple[str, str]] = set()

    def blocked(self, subscription_id: str, key: str | None) -> int:
        if key is None:
            return 0
        pair = (subscription_id, key)
        if pair not in self._checked:
            self._checked.add(pair)
            row = self._conn.execute(
                "SELECT 1 FROM deliveries WHERE subscription_id = ? AND ordering_key = ? "
                "AND state IN ('pending', 'leased') LIMIT 1",
                pair,
            ).fetchone()
            if row is not None:
                self._open.add(pair)
        if pair in self._open:
            return 1
        self._open.add(pair)
        return 0


def promote_next(conn: sqlite3.Connection, subscription_id: str, key: str) -> None:
    """The head of an ordering key finished: the next delivery of that key may go (unless one already can)."""
    conn.execute(
        "UPDATE deliveries SET blocked = 0 WHERE rowid = (SELECT rowid FROM deliveries WHERE subscription_id = ? "
        "AND ordering_key = ? AND state = 'pending' AND blocked = 1 ORDER BY event_seq LIMIT 1) "
        "AND NOT EXISTS (SELECT 1 FROM deliveries WHERE subscription_id = ? AND ordering_key = ? "
        "AND state IN ('pending', 'leased') AND blocked = 0)",
        (subscription_id, key, subscription_id, key),
    )


def recompute_blocked(conn: sqlite3.Connection, subscription_id: str) -> None:
    """After deliveries of an ordered subscription were re-queued: each pending one waits iff an earlier one of
    its key is open or one of its key is in flight."""
    conn.execute(
        "UPDATE deliveries SET blocked = EXISTS (SELECT 1 FROM deliveries h WHERE h.subscription_id = "
        "deliveries.subscription_id AND h.ordering_key = deliveries.ordering_key AND h.rowid != deliveries.rowid "
        # an earlier one still open, or any one of the subject in flight now (a re-queued older delivery waits
        # for it: one delivery of a subject at a time)
        "AND ((h.state IN ('pending', 'leased') AND h.event_seq < deliveries.event_seq) OR h.state = 'leased')) "
        "WHERE subscription_id = ? AND ordering_key IS NOT NULL AND state = 'pending'",
        (subscription_id,),
    )


@dataclass(frozen=True, slots=True)
class Matcher:
    subscription_id: str
    patterns: PatternSet
    filter: ContentFilter | None
    start_seq: int = 0  # events before a start position that lay past the end of the log are not for it
    start_at: int = 0
    ordered: bool = False  # ordering = subject: deliveries carry the subject as their ordering key

    @classmethod
    def of(
        cls,
        subscription_id: str,
        patterns: Sequence[str],
        filter_json: str | None,
        start_seq: int = 0,
        start_at: int = 0,
        *,
        ordered: bool = False,
    ) -> Matcher:
        return cls(
            subscription_id, PatternSet.parse(patterns), ContentFilter.parse(filter_json), start_seq, start_at, ordered
        )

    def starts_after(self, seq: int, received_at: int) -> bool:
        return seq < self.start_seq or received_at < self.start_at

    def matches(self, event: Event, document: dict[str, object] | None) -> bool:
        if not self.patterns.matches(event.type):
            return False
        if event.subject == self.subscription_id and is_system_type(event.type):
            return False  # a subscription never receives system events about itself
        return self.filter is None or (document is not None and self.filter.matches(document))

    def key_of(self, event: Event) -> str | None:
        return event.subject if self.ordered else None


class SubscriptionCache:
    """The compiled matchers of live subscriptions, owned by the writer thread.

    Every operation that changes subscriptions invalidates it; so does any failed operation or commit (its
    changes were rolled back). It is reloaded inside the next transaction that needs it, so it always agrees
    with what that transaction sees.
    """

    def __init__(self) -> None:
        self._matchers: list[Matcher] | None = None

    def invalidate(self) -> None:
        self._matchers = None

    def matchers(self, conn: sqlite3.Connection) -> list[Matcher]:
        if self._matchers is None:
            # Paused subscriptions still get deliveries (held until resumed); disabled ones get none.
            rows = conn.execute(
                "SELECT id, patterns, filter, start_seq, start_at, ordering FROM subscriptions "
                "WHERE state IN ('active', 'paused')"
            ).fetchall()
            self._matchers = []
            for id_, patterns, filter_json, start_seq, start_at, ordering in rows:
                try:
                    matcher = Matcher.of(
                        id_,
                        json.loads(patterns),
                        filter_json,
                        start_seq or 0,
                        start_at or 0,
                        ordered=ordering == "subject",
                    )
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


def sample_of(event: Event) -> tuple[str | None, str | None]:
    """(sample, why none was kept) for the catalogue: the data as JSON text when it is JSON and at most 4 KiB."""
    data = event.data
    if data is None:
        return None, None
    if event.data_kind is DataKind.TEXT and not event.has_json_data:
        if len(data) > MAX_SAMPLE_BYTES:  # its JSON string is at least as long
            return None, "too_large"
        text = json.dumps(data.decode("utf-8", "replace"), ensure_ascii=False)  # text data is a JSON string
        return (text, None) if len(text.encode()) <= MAX_SAMPLE_BYTES else (None, "too_large")
    if not event.has_json_data:
        return None, "not_json"
    if len(data) > MAX_SAMPLE_BYTES:
        return None, "too_large"
    try:
        text = data.decode("utf-8")
        json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        return None, "not_json"
    return text, None


def catalogue(conn: sqlite3.Connection, stored: Sequence[tuple[Event, str]], stamp: int) -> None:
    """Count the newly stored events by type (one upsert per distinct type), keeping each type's last as sample."""
    counts: dict[str, int] = {}
    last: dict[str, tuple[Event, str]] = {}
    for event, event_id in stored:
        counts[event.type] = counts.get(event.type, 0) + 1
        last[event.type] = (event, event_id)
    rows = []
    for type_, count in counts.items():
        event, event_id = last[type_]
        sample, omitted = sample_of(event)
        rows.append((type_, count, stamp, stamp, event_id, sample, omitted))
    conn.executemany(UPSERT_EVENT_TYPE, rows)


def _only_matcher(conn: sqlite3.Connection, subscription_id: str) -> Matcher:
    """The one subscription a test event goes to, whatever its patterns and filter (paused: created and held)."""
    row = conn.execute("SELECT state, ordering FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    if row is None or row[0] == "deleted":
        raise NotFoundError(f"subscription {subscription_id!r} does not exist")
    if row[0] not in ("active", "paused"):
        raise FailedPreconditionError(f"subscription {subscription_id} is {row[0]}: nothing is delivered to it")
    return Matcher.of(subscription_id, ["**"], None, ordered=row[1] == "subject")


def append(
    conn: sqlite3.Connection,
    cache: SubscriptionCache,
    events: Sequence[Event],
    *,
    now: datetime,
    not_before: datetime | None,
    window: timedelta,
    only_subscription: str | None = None,
) -> tuple[list[AppendOutcome], set[str]]:
    stamp = to_micros(now)
    due = max(stamp, to_micros(not_before)) if not_before is not None else stamp
    horizon = to_micros(now - window)
    if only_subscription is not None:
        # A test send: exactly one delivery, to that subscription; the others' matchers are not consulted.
        matchers = [_only_matcher(conn, only_subscription)]
    else:
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
    new_events: list[tuple[Event, str]] = []
    deliveries: list[Delivery] = []
    keys = OrderingKeys(conn)
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
        new_events.append((event, event_id))
        outcome = AppendOutcome(event_id, seq, duplicate=False)
        outcomes.append(outcome)
        seen[key] = outcome
        document = filter_document(event) if needs_document else None
        for matcher in matchers:
            if only_subscription is not None or (
                matcher.matches(event, document) and not matcher.starts_after(seq, stamp)
            ):
                ordering_key = matcher.key_of(event)
                blocked = keys.blocked(matcher.subscription_id, ordering_key)
                deliveries.append((new_id("dlv"), matcher.subscription_id, seq, due, stamp, ordering_key, blocked))
                touched.add(matcher.subscription_id)
    if rows:
        conn.executemany(
            "INSERT INTO events (seq, event_id, source, id, type, subject, time, datacontenttype, dataschema, "
            "extensions, data, data_kind, received_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        catalogue(conn, new_events, stamp)
    if deliveries:
        conn.executemany(INSERT_DELIVERY, deliveries)
    return outcomes, touched
