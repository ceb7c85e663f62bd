"""The clock the core reads time from: real in production, manual in tests (a 27-hour schedule in milliseconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the core needs of time: now, and a way to wait until a moment."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, moment: datetime) -> None:
        """Return at `moment` or soon after (at once when it is past)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        delay = (moment - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when told to: `advance()` wakes every sleeper whose moment has come."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta | float) -> datetime:
        """Move time forward by `by` (seconds or a timedelta) and wake the sleepers."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        while self._now < moment:
            await self._changed.wait()


async def first_of(*awaitables: Awaitable[object]) -> None:
    """Wait until the first of these completes (e.g. a wake-up or a clock's sleep), then cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: how the stores keep instants."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The inverse of `to_micros`, timezone-aware UTC."""
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
