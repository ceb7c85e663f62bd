"""Send limits that hold across processes: an optional store capability.

A store shared by many gateway processes (PostgreSQL) offers `acquire_send_slots`; the dispatcher then asks it before
each send, so a subscription's `max_concurrency` and `rate_limit`, and the rate a plugin kind shares by key (its
`RateLimit`), bound the sends of all processes together. A store without it (SQLite: one process per file) keeps the
dispatcher's in-process limits (bus/ratelimit.py), which are then exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class SendLease:
    """A leased delivery the dispatcher wants to send now."""

    delivery_id: str
    lease_token: int
    through_open_circuit: bool = False  # a probe or a resend: an open circuit lets it go


@dataclass(frozen=True, slots=True)
class SharedRate:
    """A send rate a kind shares between its subscriptions by key (one provider account): one token bucket per
    key, at the lowest rate any active subscription sharing it asks for."""

    key: str  # the kind's name and the kind's key (bus/ratelimit.py `shared_rate`)
    rate: float  # per second, as this subscription's options ask
    as_of: datetime  # the subscription's `updated_at` the rate was read at: a later change makes it stale


@dataclass(frozen=True, slots=True)
class SendGrant:
    """The store's answer: send the first `granted` of the leases asked for; keep the others queued."""

    granted: int
    # Some held back by the rate limit: when its bucket has the next token (None: they wait for a slot to free).
    retry_at: datetime | None = None
    # The subscription is not active, or its circuit is open (for what was asked): read it again before sending.
    held: bool = False


@runtime_checkable
class SharedSendLimits(Protocol):
    async def acquire_send_slots(
        self,
        subscription_id: str,
        leases: Sequence[SendLease],
        *,
        max_concurrency: int,
        rate: float | None,
        sending_for: timedelta,
        now: datetime,
        shared: SharedRate | None = None,
    ) -> SendGrant:
        """Grant the first k of `leases` (in order) in one transaction, k as large as the subscription's limits let:
        the sends in flight in every process (granted, lease still held, not settled, and within `sending_for` of
        the grant) stay at most `max_concurrency`, and a token bucket of `rate` per second (burst: one second's
        worth, at least 1) shared by every process gives each send a token. Leased deliveries that are only queued
        do not count. A slot frees by itself when the attempt is recorded (the delivery leaves `leased`), when the
        lease is released or lost, or after `sending_for` (a process that died mid-send).

        With `shared`, each send also takes a token of the key's bucket, shared by every process and every
        subscription naming the key, at the lowest rate among them (as of their current settings, while active);
        a change of that rate keeps the tokens already spent. `retry_at` is then the later of the two buckets'
        next token."""
        ...
