"""Retry policy: when the next attempt of a failed delivery is due (DESIGN.md §3)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

JITTER = 0.2


def next_retry_at(
    *,
    schedule: Sequence[timedelta],
    attempt: int,
    now: datetime,
    retry_after: timedelta | None = None,
    slow_failure: bool = False,
    rng: random.Random | None = None,
) -> datetime | None:
    """When attempt `attempt + 1` is due after attempt `attempt` failed; None when the schedule is used up.

    `d = schedule[attempt - 1]`; after a 429 or a timeout (`slow_failure`) `d = max(d, 60 s)`; a `retry_after`
    from the receiver gives `d = clamp(retry_after, d, 2d)`; then ±20 % jitter, never below `retry_after`.
    """
    if attempt < 1 or attempt > len(schedule):
        return None
    delay = schedule[attempt - 1]
    if slow_failure:
        delay = max(delay, timedelta(seconds=60))
    if retry_after is not None:
        delay = min(max(retry_after, delay), 2 * delay)
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    jittered = delay * factor
    if retry_after is not None:
        jittered = max(jittered, retry_after)
    return now + jittered
