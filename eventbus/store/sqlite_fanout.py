"""Fan-out at append: the compiled matchers of live subscriptions, and the append operation that uses them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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
INSERT_EVENT = (
    "INSERT INTO events (seq, event_id, source, id, type, subject, time, datacontenttype, dataschema, "
    "extensions, data, data_kind, received_at, not_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# One row per distinct type of an append: counts add up, the last event of the batch becomes the sample. The
# existing row's columns are qualified: PostgreSQL runs this statement too, and calls a bare `count` ambiguous.
UPSERT_EVENT_TYPE = (
    "INSERT INTO event_types (type, count, first_seen, last_seen, sample_event_id, sample, sample_omitted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type) DO UPDATE SET count = event_types.count + excluded.count, "
    "first_seen = COALESCE(event_types.first_seen, excluded.first_seen), last_seen = excluded.last_seen, "
    "sample_event_id = excluded.sample_event_id, sample = excluded.sample, sample_omitted = excluded.sample_omitted"
)


class KeyGate:
    """Which new deliveries of ordered subscriptions must wait: an earlier one of the same key is still open.

    `is_open` answers whether the store already holds a pending or leased delivery of a (subscription, key); it is
    asked once per pair, and keys opened through this gate (earlier in the same transaction) count too. Backend-free:
    SQLite looks each pair up as it comes (`OrderingKeys`), PostgreSQL fetches them all in one query first.
    """

    def __init__(self, is_open: Callable[[tuple[str, str]], bool]) -> None:
        self._is_open = is_open
        self._open: set[tuple[str, str]] = set()
        self._checked: set[tuple[str, str]] = set()

    def blocked(self, subscription_id: str, key: str | None) -> int:
        if key is None:
            return 0
        pair = (subscription_id, key)
        if pair not in self._checked:
            self._checked.add(pair)
            if self._is_open(pair):
                self._open.add(pair)
        if pair in self._open:
            return 1
        self._open.add(pair)
        return 0


class OrderingKeys(KeyGate):
    """`KeyGate` on a SQLite connection: one indexed look-up per (subscription, key) per transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(
            lambda pair: (
                conn.execute(
                    "SELECT 1 FROM deliveries WHERE subscription_id = ? AND ordering_key = ? "
                    "AND state IN ('pending', 'leased') LIMIT 1",
                    pair,
                ).fetchone()
                is not None
            )
        )


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


# The live subscriptions fan-out matches against (paused ones still get deliveries, held until resumed; disabled
# ones get none), in the column order `matchers_from_rows` reads.
MATCHER_SQL = (
    "SELECT id, patterns, filter, start_seq, start_at, ordering FROM subscriptions WHERE state IN ('active', 'paused')"
)


def matchers_from_rows(rows: Iterable[Any]) -> list[Matcher]:
    """Compile the rows of `MATCHER_SQL`; a subscription whose stored filter cannot be compiled is left out."""
    matchers: list[Matcher] = []
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
        matchers.append(matcher)
    return matchers


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
            self._matchers = matchers_from_rows(conn.execute(MATCHER_SQL).fetchall())
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


def catalogue_rows(stored: Sequence[tuple[Event, str]], stamp: int) -> list[tuple[object, ...]]:
    """The `UPSERT_EVENT_TYPE` parameters for newly stored events: one row per distinct type, the last as sample."""
    counts: dict[str, int] = {}
    last: dict[str, tuple[Event, str]] = {}
    for event, event_id in stored:
        counts[event.type] = counts.get(event.type, 0) + 1
        last[event.type] = (event, event_id)
    rows: list[tuple[object, ...]] = []
    for type_, count in counts.items():
        event, event_id = last[type_]
        sample, omitted = sample_of(event)
        rows.append((type_, count, stamp, stamp, event_id, sample, omitted))
    return rows


def catalogue(conn: sqlite3.Connection, stored: Sequence[tuple[Event, str]], stamp: int) -> None:
    """Count the newly stored events by type (one upsert per distinct type), keeping each type's last as sample."""
    conn.executemany(UPSERT_EVENT_TYPE, catalogue_rows(stored, stamp))


def only_matcher(subscription_id: str, row: Any) -> Matcher:
    """The one subscription a test event goes to, whatever its patterns and filter (paused: created and held).

    `row` is its (state, ordering), None when it does not exist."""
    if row is None or row[0] == "deleted":
        raise NotFoundError(f"subscription {subscription_id!r} does not exist")
    if row[0] not in ("active", "paused"):
        raise FailedPreconditionError(f"subscription {subscription_id} is {row[0]}: nothing is delivered to it")
    return Matcher.of(subscription_id, ["**"], None, ordered=row[1] == "subject")


def _only_matcher(conn: sqlite3.Connection, subscription_id: str) -> Matcher:
    row = conn.execute("SELECT state, ordering FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
    return only_matcher(subscription_id, row)


# A delivery fan-out decided on, before its ordering key is gated: (delivery_id, subscription_id, event_seq,
# next_attempt_at, created_at, ordering_key).
PlannedDelivery = tuple[str, str, int, int, int, str | None]


@dataclass(slots=True)
class AppendPlan:
    """What an append writes, decided without the database: events rows (in `INSERT_EVENT` order), the new
    events for the catalogue, the deliveries in seq order, and the last seq it allocated."""

    outcomes: list[AppendOutcome]
    rows: list[tuple[object, ...]]
    new_events: list[tuple[Event, str]]
    deliveries: list[PlannedDelivery]
    touched: set[str]
    last_seq: int

    def gated(self, keys: KeyGate) -> list[Delivery]:
        """The deliveries as `INSERT_DELIVERY` rows, each blocked behind an open one of its ordering key."""
        return [(*planned, keys.blocked(planned[1], planned[5])) for planned in self.deliveries]

    def ordering_pairs(self) -> set[tuple[str, str]]:
        """The (subscription, ordering key) pairs the deliveries use."""
        return {(d[1], d[5]) for d in self.deliveries if d[5] is not None}


def plan_append(
    events: Sequence[Event],
    latest: dict[tuple[str, str], tuple[str, int, int]],
    matchers: Sequence[Matcher],
    *,
    seq: int,
    now: datetime,
    not_before: datetime | None,
    window: timedelta,
    only_subscription: str | None = None,
) -> AppendPlan:
    """Dedup on (source, id) within `window` (against `latest`, the stored (event_id, seq, received_at) of each
    pair, and within the batch), allocate seqs after `seq`, and fan every new event out to the matchers."""
    stamp = to_micros(now)
    due = max(stamp, to_micros(not_before)) if not_before is not None else stamp
    horizon = to_micros(now - window)
    needs_document = any(m.filter is not None for m in matchers)
    plan = AppendPlan([], [], [], [], set(), seq)
    seen: dict[tuple[str, str], AppendOutcome] = {}
    for event in events:
        key = (event.source, event.id)
        earlier = seen.get(key)
        if earlier is not None:
            plan.outcomes.append(AppendOutcome(earlier.event_id, earlier.seq, duplicate=True))
            continue
        previous = latest.get(key)
        if previous is not None and previous[2] >= horizon:
            outcome = AppendOutcome(previous[0], previous[1], duplicate=True)
            plan.outcomes.append(outcome)
            seen[key] = outcome
            continue
        seq += 1
        event_id = new_id("evt")
        plan.rows.append((seq, event_id, *event_params(event), stamp, due if due != stamp else None))
        plan.new_events.append((event, event_id))
        outcome = AppendOutcome(event_id, seq, duplicate=False)
        plan.outcomes.append(outcome)
        seen[key] = outcome
        document = filter_document(event) if needs_document else None
        for matcher in matchers:
            if only_subscription is not None or (
                matcher.matches(event, document) and not matcher.starts_after(seq, stamp)
            ):
                plan.deliveries.append((new_id("dlv"), matcher.subscription_id, seq, due, stamp, matcher.key_of(event)))
                plan.touched.add(matcher.subscription_id)
    plan.last_seq = seq
    return plan


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
    if only_subscription is not None:
        # A test send: exactly one delivery, to that subscription; the others' matchers are not consulted.
        matchers = [_only_matcher(conn, only_subscription)]
    else:
        matchers = cache.matchers(conn)
    latest = _latest_by_key(conn, events)
    # One writer owns the file, so seqs can be handed out here and the rows inserted in one executemany;
    # AUTOINCREMENT's counter still moves with them, so a seq is never reused.
    # The larger of AUTOINCREMENT's counter and the highest row, as AUTOINCREMENT itself does (a restored
    # file may lack the counter); MAX on the primary key is one index look-up.
    seq = conn.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
        "COALESCE((SELECT MAX(seq) FROM events), 0))"
    ).fetchone()[0]
    plan = plan_append(
        events,
        latest,
        matchers,
        seq=seq,
        now=now,
        not_before=not_before,
        window=window,
        only_subscription=only_subscription,
    )
    if plan.rows:
        conn.executemany(INSERT_EVENT, plan.rows)
        catalogue(conn, plan.new_events, to_micros(now))
    deliveries = plan.gated(OrderingKeys(conn))
    if deliveries:
        conn.executemany(INSERT_DELIVERY, deliveries)
    return plan.outcomes, plan.touched
