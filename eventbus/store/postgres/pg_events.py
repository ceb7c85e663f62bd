"""The log in the PostgreSQL store: the append (dedup, seqs under the append lock, fan-out), reads and retention."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from eventbus.clock import to_micros
from eventbus.model import Event, StoredEvent
from eventbus.store.base import AppendOutcome, EventQuery
from eventbus.store.postgres.access import APPEND_LOCK, CHANGED_SETTING, PgAccess
from eventbus.store.postgres.pg_batch import AppendBatcher
from eventbus.store.rows import EVENT_COLUMNS, event_from_row
from eventbus.store.sqlite_fanout import (
    INSERT_DELIVERY,
    INSERT_EVENT,
    MATCHER_SQL,
    UPSERT_EVENT_TYPE,
    KeyGate,
    Matcher,
    catalogue_rows,
    matchers_from_rows,
    only_matcher,
    plan_append,
)

_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """SQLite's `?` placeholders as PostgreSQL's `$1, $2, ...` (for statements shared with the SQLite store, whose
    text holds no `?` inside a literal)."""
    count = 0

    def next_placeholder(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(next_placeholder, sql)


PG_INSERT_EVENT = numbered(INSERT_EVENT)
PG_INSERT_DELIVERY = numbered(INSERT_DELIVERY)
PG_UPSERT_EVENT_TYPE = numbered(UPSERT_EVENT_TYPE)
_LAST_ALLOCATED = "SELECT GREATEST(last_seq, COALESCE((SELECT MAX(seq) FROM events), 0)) FROM event_seq"
# The latest stored event of each (source, id) of a batch: one index-driven query for the whole batch.
_LATEST_BY_KEY = (
    "SELECT DISTINCT ON (e.source, e.id) e.source, e.id, e.event_id, e.seq, e.received_at "
    "FROM unnest($1::text[], $2::text[]) AS k(source, id) JOIN events e ON e.source = k.source AND e.id = k.id "
    "ORDER BY e.source, e.id, e.seq DESC"
)
# The (subscription, ordering key) pairs that already have a pending or leased delivery.
_OPEN_KEYS = (
    "SELECT k.subscription_id, k.ordering_key FROM unnest($1::text[], $2::text[]) AS k(subscription_id, ordering_key) "
    "WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = k.subscription_id "
    "AND d.ordering_key = k.ordering_key AND d.state IN ('pending', 'leased'))"
)
# What identifies one store's subscriptions among every database this process talks to, and their version.
_VERSION = (
    "SELECT v.version, v.tableoid::bigint, current_database(), inet_server_addr()::text, inet_server_port(), "
    "current_setting($1, true) FROM subscriptions_version v"
)
# Retention of events: the oldest events past the cutoff that no backfill has still to read and no delivery refers to.
_PRUNABLE_CONDITIONS = (
    "e.received_at < $1 AND e.seq < (SELECT COALESCE(MIN(backfill_next_seq), 9223372036854775807) "
    "FROM subscriptions WHERE backfill_next_seq IS NOT NULL AND state != 'deleted') "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)"
)
_PRUNABLE_EVENTS = f"SELECT e.seq FROM events e WHERE {_PRUNABLE_CONDITIONS} ORDER BY e.seq LIMIT $2"
# The seqs come as `ARRAY(SELECT unnest($2))`, not `$2`: given the array itself, the planner knows its length and
# chose a scan of the whole table (every row read under the append lock); not knowing it, it looks each seq up.
_DELETE_EVENTS = (
    f"DELETE FROM events e WHERE e.seq = ANY(ARRAY(SELECT unnest($2::bigint[]))) AND {_PRUNABLE_CONDITIONS}"
)
_CACHE_SIZE = 64
# Compiled matchers by store (see `_VERSION`): (version, matchers). Shared by every connection of the process.
_matcher_cache: OrderedDict[tuple[object, ...], tuple[int, list[Matcher]]] = OrderedDict()


async def live_matchers(conn: asyncpg.Connection) -> list[Matcher]:
    """The compiled matchers of live subscriptions, reloaded when `subscriptions_version` moved.

    Call under APPEND_LOCK: every change to subscriptions takes it too (`_subscriptions_changed`), so version and
    rows are read without a change between them. Matchers read in a transaction that itself changed subscriptions
    see uncommitted rows: they are used, never cached.
    """
    row = await conn.fetchrow(_VERSION, CHANGED_SETTING)
    assert row is not None, "subscriptions_version has its one row from the first migration"
    version, key, changed_here = int(row[0]), tuple(row[1:5]), row[5] == "1"
    cached = _matcher_cache.get(key)
    if cached is not None and cached[0] == version and not changed_here:
        _matcher_cache.move_to_end(key)
        return cached[1]
    matchers = matchers_from_rows(await conn.fetch(MATCHER_SQL))
    if not changed_here:
        _matcher_cache[key] = (version, matchers)
        _matcher_cache.move_to_end(key)
        while len(_matcher_cache) > _CACHE_SIZE:
            _matcher_cache.popitem(last=False)
    return matchers


async def _latest_by_key(
    conn: asyncpg.Connection, events: Sequence[Event]
) -> dict[tuple[str, str], tuple[str, int, int]]:
    """(source, id) → (event_id, seq, received_at) of the latest stored event, for every pair in `events`."""
    pairs = list(dict.fromkeys((e.source, e.id) for e in events))
    rows = await conn.fetch(_LATEST_BY_KEY, [p[0] for p in pairs], [p[1] for p in pairs])
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


async def ordering_gate(conn: asyncpg.Connection, pairs: set[tuple[str, str]]) -> KeyGate:
    """A `KeyGate` for these (subscription, ordering key) pairs: which are open is read in one query.

    Call under APPEND_LOCK (anything that unblocks a delivery takes it too), so no head finishes unseen meanwhile.
    """
    if not pairs:
        return KeyGate(lambda pair: False)
    ordered = sorted(pairs)
    rows = await conn.fetch(_OPEN_KEYS, [p[0] for p in ordered], [p[1] for p in ordered])
    found = {(r[0], r[1]) for r in rows}
    return KeyGate(found.__contains__)


async def append_in(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    now: datetime,
    not_before: datetime | None,
    window: timedelta,
    only_subscription: str | None = None,
) -> tuple[list[AppendOutcome], set[str]]:
    """`Store.append` inside the caller's transaction: the outcomes and the subscriptions that got deliveries.

    The caller announces those (`_announce`, in the transaction) and wakes local waiters after the commit. Seqs are
    allocated under pg_advisory_xact_lock(APPEND_LOCK), held to the end of the transaction: appends commit in seq
    order, so a reader paging by seq never passes a seq that commits later. Make it the transaction's last step.
    """
    if not events and only_subscription is None:
        return [], set()
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    if only_subscription is not None:
        # A test send: exactly one delivery, to that subscription; the others' matchers are not consulted.
        row = await conn.fetchrow("SELECT state, ordering FROM subscriptions WHERE id = $1", only_subscription)
        matchers = [only_matcher(only_subscription, row)]
    else:
        matchers = await live_matchers(conn)
    if not events:
        return [], set()
    latest = await _latest_by_key(conn, events)
    # Under the lock: the counter (never behind the highest row, as AUTOINCREMENT in SQLite) is ours alone.
    seq = int(await conn.fetchval(_LAST_ALLOCATED))
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
        await conn.executemany(PG_INSERT_EVENT, plan.rows)
        await conn.execute("UPDATE event_seq SET last_seq = $1", plan.last_seq)
        await conn.executemany(PG_UPSERT_EVENT_TYPE, catalogue_rows(plan.new_events, to_micros(now)))
    deliveries = plan.gated(await ordering_gate(conn, plan.ordering_pairs()))
    if deliveries:
        await conn.executemany(PG_INSERT_DELIVERY, deliveries)
    return plan.outcomes, plan.touched


class EventOperations(PgAccess):
    """Append, read and prune the log. Mixed into `PostgresStore`."""

    _appends: AppendBatcher | None  # this process's appends in shared transactions (`pg_batch`)

    async def append(
        self,
        events: Sequence[Event],
        *,
        now: datetime,
        not_before: datetime | None,
        dedup_window: timedelta,
        only_subscription: str | None = None,
    ) -> list[AppendOutcome]:
        if only_subscription is not None:  # a test send: its own transaction, to its one subscription
            return await self._append_transaction(events, now, not_before, dedup_window, only_subscription)
        if not events:
            return []
        if self._appends is None:
            self._appends = AppendBatcher(self._append_transaction)
        return await self._appends.append(events, now=now, not_before=not_before, window=dedup_window)

    async def _append_transaction(
        self,
        events: Sequence[Event],
        now: datetime,
        not_before: datetime | None,
        window: timedelta,
        only_subscription: str | None = None,
    ) -> list[AppendOutcome]:
        async with self._tx() as conn:
            outcomes, touched = await append_in(
                conn, events, now=now, not_before=not_before, window=window, only_subscription=only_subscription
            )
            await self._announce(conn, touched)
        self.wakeups.notify(touched)
        return outcomes

    async def get_event(self, event_id: str) -> StoredEvent | None:
        row = await self._read_one(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1", event_id)
        return event_from_row(row) if row else None

    async def find_event(self, source: str, id: str) -> StoredEvent | None:
        row = await self._read_one(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE source = $1 AND id = $2 ORDER BY seq DESC LIMIT 1", source, id
        )
        return event_from_row(row) if row else None

    async def list_events(self, query: EventQuery) -> list[StoredEvent]:
        clauses: list[str] = ["seq > $1"]
        params: list[object] = [query.after_seq]
        for column, value in (("source", query.source), ("subject", query.subject)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        if query.received_after is not None:
            params.append(to_micros(query.received_after))
            clauses.append(f"received_at >= ${len(params)}")
        if query.received_before is not None:
            params.append(to_micros(query.received_before))
            clauses.append(f"received_at < ${len(params)}")
        params.append(query.limit)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ${len(params)}"
        return [event_from_row(row) for row in await self._read(sql, *params)]

    async def last_seq(self) -> int:
        row = await self._read_one("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(row[0]) if row else 0

    async def prune(self, *, older_than: datetime, limit: int) -> int:
        cutoff = to_micros(older_than)
        # Attempts and finished deliveries first, in a transaction of their own: they need no append lock, and their
        # row locks are not held while the events' part waits for it.
        async with self._tx() as conn:
            # The outer conditions repeat the inner ones: a row changed meanwhile (a resend revives a finished
            # delivery) is checked again in its new version, and kept. `= ANY(ARRAY(...))` keeps the plan a limited
            # subquery plus key lookups: with `IN (...)` the planner hash-joined every prunable row, O(backlog) a
            # batch (measured: 150,000 rows read to delete 5,000).
            status = await conn.execute(
                "DELETE FROM attempts WHERE attempt_id = ANY(ARRAY(SELECT attempt_id FROM attempts "
                "WHERE started_at < $1 LIMIT $2)) AND started_at < $1",
                cutoff,
                limit,
            )
            removed = affected_rows(status)
            status = await conn.execute(
                "DELETE FROM deliveries WHERE delivery_id = ANY(ARRAY(SELECT delivery_id FROM deliveries "
                "WHERE finished_at IS NOT NULL AND finished_at < $1 LIMIT $2)) "
                "AND finished_at IS NOT NULL AND finished_at < $1",
                cutoff,
                limit,
            )
            removed += affected_rows(status)
        async with self._tx() as conn:
            # Events a subscription's unfinished backfill (a join at earliest, a seek) still has to read are kept,
            # and so are events a delivery still refers to. The candidates are found without the append lock (the
            # scan may pass many kept rows); only the delete, which checks every condition again by key, runs under
            # it. That is safe: the lock orders the delete after any create or seek that set a backfill start, any
            # backfill batch and any append that fanned out, and in READ COMMITTED the delete's snapshot is taken
            # after the lock was granted, so it sees what they committed. Appends wait for the delete and the
            # commit only: a batch of 5,000 deletes by key (of 50,000 events, 5,000 rows read: 12-25 ms measured).
            seqs = [row[0] for row in await conn.fetch(_PRUNABLE_EVENTS, cutoff, limit)]
            if seqs:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                status = await conn.execute(_DELETE_EVENTS, cutoff, seqs)
                removed += affected_rows(status)
        return removed


def affected_rows(status: str) -> int:
    """The row count of a command status (`DELETE 12`)."""
    return int(status.rsplit(" ", 1)[-1])
