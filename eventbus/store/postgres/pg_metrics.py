"""`MetricsQueries` on PostgreSQL: the SQLite statements ported 1:1, read on pooled connections.

Each statement starts from `subscriptions` and probes `deliveries_subscription_state` or the partial
`deliveries_due` once per subscription (LATERAL subqueries), so a scrape reads the backlog and the dead deliveries,
never the succeeded history.
"""

from __future__ import annotations

from datetime import datetime

from eventbus.clock import from_micros, to_micros
from eventbus.store.metrics_queries import StoreCounts, backlogs, oldest_seq
from eventbus.store.postgres import PostgresStore

SUBSCRIPTIONS_SQL = (
    "SELECT id, kind, name, ephemeral, state, circuit FROM subscriptions WHERE state != 'deleted' ORDER BY id"
)
# LATERAL: one parameterized index scan per subscription. A plain join lets the planner hash-join a sequential scan
# of every delivery, which it prefers while the backlog is a large part of a small table, and regrets as it grows.
STATES_SQL = (
    "SELECT s.id, x.state, x.n FROM subscriptions AS s CROSS JOIN LATERAL ("
    "SELECT d.state, count(*) AS n FROM deliveries AS d "
    "WHERE d.subscription_id = s.id AND d.state IN ('pending', 'leased') GROUP BY d.state) AS x "
    "WHERE s.state != 'deleted'"
)
DUE_SQL = (
    "SELECT s.id, x.n, x.due, x.oldest FROM subscriptions AS s CROSS JOIN LATERAL ("
    "SELECT count(*) AS n, count(*) FILTER (WHERE d.next_attempt_at <= $1) AS due, min(d.event_seq) AS oldest "
    "FROM deliveries AS d WHERE d.subscription_id = s.id AND d.state IN ('pending', 'leased') AND d.blocked = 0"
    ") AS x WHERE s.state != 'deleted' AND x.n > 0"
)
DEAD_SQL = (
    "SELECT x.dead_reason, sum(x.n)::bigint AS n FROM subscriptions AS s CROSS JOIN LATERAL ("
    "SELECT d.dead_reason, count(*) AS n FROM deliveries AS d "
    "WHERE d.subscription_id = s.id AND d.state = 'dead' GROUP BY d.dead_reason) AS x "
    "WHERE s.state != 'deleted' GROUP BY x.dead_reason"
)
RECEIVED_SQL = "SELECT received_at FROM events WHERE seq = $1"


class PgMetricsQueries:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def store_counts(self, *, now: datetime) -> StoreCounts:
        store = self._store
        subscriptions = await store._read(SUBSCRIPTIONS_SQL)
        states = {(r["id"], r["state"]): r["n"] for r in await store._read(STATES_SQL)}
        due = {r["id"]: (r["n"], r["due"], r["oldest"]) for r in await store._read(DUE_SQL, to_micros(now))}
        dead = {r["dead_reason"] or "unknown": r["n"] for r in await store._read(DEAD_SQL)}
        rows = [(r["id"], r["kind"], r["name"], r["ephemeral"], r["state"], r["circuit"]) for r in subscriptions]
        backlog = backlogs(rows, states, due)
        seq = oldest_seq(backlog)
        received = await store._read_one(RECEIVED_SQL, seq) if seq is not None else None
        return StoreCounts(tuple(backlog), dead, from_micros(received["received_at"]) if received else None)
