"""`MetricsQueries` on SQLite: one read on a reader connection, four statements walking existing indexes.

Each statement starts from `subscriptions` (a few rows; CROSS JOIN keeps SQLite's planner from starting anywhere
else) and ranges over one subscription's slice of `deliveries_subscription_state` at a time: the per-state counts
read that index alone, due-ness and dead reasons read the rows of the backlog and the dead ones only, never the
succeeded history. tests/metrics/test_store_queries.py checks the plans.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from eventbus.clock import from_micros, to_micros
from eventbus.store.metrics_queries import StoreCounts, backlogs, oldest_seq
from eventbus.store.sqlite import SQLiteStore

SUBSCRIPTIONS_SQL = (
    "SELECT id, kind, name, ephemeral, state, circuit FROM subscriptions WHERE state != 'deleted' ORDER BY id"
)
STATES_SQL = (
    "SELECT s.id, d.state, count(*) FROM subscriptions AS s "
    "CROSS JOIN deliveries AS d ON d.subscription_id = s.id AND d.state IN ('pending', 'leased') "
    "WHERE s.state != 'deleted' GROUP BY s.id, d.state"
)
DUE_SQL = (
    "SELECT s.id, count(*), sum(d.next_attempt_at <= ?), min(d.event_seq) FROM subscriptions AS s "
    "CROSS JOIN deliveries AS d ON d.subscription_id = s.id AND d.state IN ('pending', 'leased') AND d.blocked = 0 "
    "WHERE s.state != 'deleted' GROUP BY s.id"
)
DEAD_SQL = (
    "SELECT d.dead_reason, count(*) FROM subscriptions AS s "
    "CROSS JOIN deliveries AS d ON d.subscription_id = s.id AND d.state = 'dead' "
    "WHERE s.state != 'deleted' GROUP BY d.dead_reason"
)
RECEIVED_SQL = "SELECT received_at FROM events WHERE seq = ?"


class SQLiteMetricsQueries:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def store_counts(self, *, now: datetime) -> StoreCounts:
        at = to_micros(now)

        def read(conn: sqlite3.Connection) -> StoreCounts:
            subscriptions = conn.execute(SUBSCRIPTIONS_SQL).fetchall()
            states: dict[tuple[str, str], int] = {(sid, state): n for sid, state, n in conn.execute(STATES_SQL)}
            due = {sid: (n, due or 0, oldest) for sid, n, due, oldest in conn.execute(DUE_SQL, (at,))}
            dead = {reason or "unknown": n for reason, n in conn.execute(DEAD_SQL)}
            backlog = backlogs(subscriptions, states, due)
            seq = oldest_seq(backlog)
            row = conn.execute(RECEIVED_SQL, (seq,)).fetchone() if seq is not None else None
            return StoreCounts(tuple(backlog), dead, from_micros(row[0]) if row else None)

        return await self._store._read(read)
