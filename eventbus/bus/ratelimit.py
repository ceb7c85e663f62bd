"""Send-rate limits of the dispatcher: token buckets on the injected clock."""

from __future__ import annotations

import math
from datetime import datetime, timedelta


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
