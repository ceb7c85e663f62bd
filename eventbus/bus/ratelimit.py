"""Send-rate limits of the dispatcher: token buckets on the injected clock."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from eventbus.bus.kinds import DeliveryKind
from eventbus.store.base import Subscription
from eventbus.store.limits import SharedRate


class TokenBucket:
    """`rate` per second with a burst of one second's worth (at least 1), refilled from the injected clock."""

    def __init__(self, rate: float, now: datetime) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: datetime) -> None:
        elapsed = (now - self.updated).total_seconds()
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now

    def available(self, now: datetime) -> int:
        self._refill(now)
        return math.floor(self.tokens + 1e-9)

    def take(self, count: int) -> None:
        self.tokens -= count

    def retune(self, rate: float, now: datetime) -> None:
        """A new rate from now on; what was spent stays spent (at most the new burst is left)."""
        self._refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)

    def next_token_at(self, now: datetime) -> datetime:
        self._refill(now)
        missing = max(0.0, 1.0 - self.tokens)
        return now + timedelta(seconds=missing / self.rate)


def shared_rate(subscription: Subscription, kind: DeliveryKind) -> SharedRate | None:
    """The rate `kind` shares between this subscription and others by key, as a store grant asks for it."""
    shared = kind.shared_rate_limit(subscription)
    if shared is None:
        return None
    return SharedRate(f"{kind.name}\n{shared[0]}", shared[1], subscription.updated_at or subscription.created_at)


class SendLimits:
    """The token buckets a send must fit in this process: a subscription's own `rate_limit`, and one a kind shares
    between subscriptions by key (e.g. one provider account) at the lowest rate any of them asks for.

    They are exact with a store of one process (SQLite). A store shared by many (PostgreSQL) grants each send
    against the same buckets kept in the database (`SharedSendLimits`); these then only keep one process from
    asking for more than the limits could ever grant."""

    def __init__(self) -> None:
        self._own: dict[str, TokenBucket] = {}
        self._shared: dict[tuple[str, str], TokenBucket] = {}
        self._shared_rates: dict[tuple[str, str], dict[str, float]] = {}  # by key: each subscription's rate
        self._member_of: dict[str, tuple[str, str]] = {}  # by subscription: the key its rate counts for

    def of(self, subscription: Subscription, kind: DeliveryKind, now: datetime) -> list[TokenBucket]:
        buckets = []
        own = self._own_bucket(subscription, now)
        if own is not None:
            buckets.append(own)
        shared = kind.shared_rate_limit(subscription)
        was = self._member_of.get(subscription.id)
        if was is not None and (shared is None or was != (kind.name, shared[0])):
            # Its options changed (another key, or none): its old rate no longer holds the old key back.
            self._shared_rates[was].pop(subscription.id, None)
            del self._member_of[subscription.id]
        if shared is not None:
            key, rate = (kind.name, shared[0]), shared[1]
            self._member_of[subscription.id] = key
            # A change of rate keeps the tokens already spent (a bucket is never refilled by a change).
            rates = self._shared_rates.setdefault(key, {})
            rates[subscription.id] = rate
            lowest = min(rates.values())
            bucket = self._shared.get(key)
            if bucket is None:
                bucket = self._shared[key] = TokenBucket(lowest, now)
            elif bucket.rate != lowest:
                bucket.retune(lowest, now)
            buckets.append(bucket)
        return buckets

    def forget(self, subscription_id: str) -> None:
        """The subscription stopped (paused, deleted): its bucket goes, its rate no longer holds others back."""
        self._own.pop(subscription_id, None)
        key = self._member_of.pop(subscription_id, None)
        if key is not None:
            self._shared_rates[key].pop(subscription_id, None)

    def _own_bucket(self, subscription: Subscription, now: datetime) -> TokenBucket | None:
        if not subscription.rate_limit:
            self._own.pop(subscription.id, None)
            return None
        bucket = self._own.get(subscription.id)
        if bucket is None or bucket.rate != subscription.rate_limit:
            bucket = self._own[subscription.id] = TokenBucket(subscription.rate_limit, now)
        return bucket
