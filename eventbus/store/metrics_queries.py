"""Counts of stored state for `/metrics`: the `MetricsQueries` Protocol, its records, and the backend lookup.

Each backend answers from the indexes the delivery path already keeps (`deliveries_subscription_state`, the
partial `deliveries_due`), walked per subscription, so a scrape reads the backlog's index entries and never the
history of succeeded deliveries. Dead deliveries are read through their `(subscription_id, state)` range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from eventbus.errors import UnavailableError


@dataclass(frozen=True, slots=True)
class SubscriptionBacklog:
    """One subscription's undelivered deliveries, as counted from the indexes."""

    subscription_id: str
    kind: str
    name: str | None
    ephemeral: bool
    state: str  # active | paused | disabled
    circuit: str  # closed | open | half_open
    pending: int  # state `pending`, ordering-blocked ones included
    leased: int
    due: int  # not blocked, pending or leased, next_attempt_at <= now (an expired lease is due again)
    unblocked: int  # not blocked, pending or leased, whenever due
    oldest_seq: int | None  # lowest event seq among the not-blocked ones (a blocked one waits on a lower seq)


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What one scrape reads from the store."""

    subscriptions: tuple[SubscriptionBacklog, ...]
    dead: dict[str, int]  # dead deliveries still stored, by reason
    oldest_received_at: datetime | None  # received_at of the oldest event with an undelivered delivery


class MetricsQueries(Protocol):
    async def store_counts(self, *, now: datetime) -> StoreCounts:
        """Every live (not deleted) subscription's backlog, dead deliveries by reason, the oldest undelivered."""
        ...


def metrics_queries_of(store: object) -> MetricsQueries:
    """The backend's queries; each reads through its store's own connections (readers, pool)."""
    from eventbus.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        from eventbus.store.sqlite_metrics import SQLiteMetricsQueries

        return SQLiteMetricsQueries(store)
    queries = _postgres_queries(store)
    if queries is not None:
        return queries
    raise UnavailableError(f"the {type(store).__name__} store keeps no metrics queries")


def _postgres_queries(store: object) -> MetricsQueries | None:
    try:
        from eventbus.store.postgres import PostgresStore
    except ImportError:  # the postgres extra (asyncpg) is not installed: then it cannot be this store either
        return None
    if not isinstance(store, PostgresStore):
        return None
    from eventbus.store.postgres.pg_metrics import PgMetricsQueries

    return PgMetricsQueries(store)
