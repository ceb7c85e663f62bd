"""The shared store: PostgreSQL through asyncpg, for many gateway processes on one database (`postgresql://...`)."""

from __future__ import annotations

from eventbus.store.postgres.core import PostgresCore
from eventbus.store.postgres.pg_events import EventOperations
from eventbus.store.postgres.pg_limits import LimitOperations
from eventbus.store.postgres.pg_managed import ManagedOperations
from eventbus.store.postgres.pg_misc import IdempotencyOperations, KeyOperations, StateOperations, TypeOperations
from eventbus.store.postgres.pg_push import PushOperations
from eventbus.store.postgres.pg_sources import SourceOperations
from eventbus.store.postgres.pg_subscriptions import SubscriptionOperations


class PostgresStore(
    PostgresCore,
    EventOperations,
    SubscriptionOperations,
    PushOperations,
    SourceOperations,
    KeyOperations,
    StateOperations,
    IdempotencyOperations,
    TypeOperations,
    LimitOperations,
    ManagedOperations,
):
    """`Store` on PostgreSQL: every operation one transaction on a pooled connection; many processes at once.

    It also offers `SharedSendLimits` (pg_limits): subscription limits that hold across processes."""


__all__ = ["PostgresStore"]
