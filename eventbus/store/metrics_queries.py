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


SubscriptionRow = tuple[str, str, "str | None", object, str, str]  # id, kind, name, ephemeral, state, circuit


def backlogs(
    subscriptions: list[SubscriptionRow],
    states: dict[tuple[str, str], int],
    due: dict[str, tuple[int, int, int | None]],
) -> list[SubscriptionBacklog]:
    """Each subscription's backlog from the backend's rows: its counts by state and its (unblocked, due now,
    oldest seq), zero where it has none."""
    found = []
    for sid, kind, name, ephemeral, state, circuit in subscriptions:
        unblocked, due_now, oldest = due.get(sid, (0, 0, None))
        found.append(
            SubscriptionBacklog(
                subscription_id=sid,
                kind=kind,
                name=name,
                ephemeral=bool(ephemeral),
                state=state,
                circuit=circuit,
                pending=states.get((sid, "pending"), 0),
                leased=states.get((sid, "leased"), 0),
                due=due_now,
                unblocked=unblocked,
                oldest_seq=oldest,
            )
        )
    return found


def oldest_seq(backlog: list[SubscriptionBacklog]) -> int | None:
    """The lowest seq with an undelivered delivery, whose event's `received_at` is the oldest pending age."""
    return min((b.oldest_seq for b in backlog if b.oldest_seq is not None), default=None)


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
