"""Appends of one process share transactions: the PostgreSQL counterpart of the SQLite writer's group commit.

Every append takes the append lock (one seq allocator for every process) and holds it to its commit, so appends
run one at a time however many calls are in flight: with one transaction per call, a process spent most of each
call's time queued on that lock and paid a commit per event (≈ 400 unary calls/s). Here the calls that arrive
while this process's previous append transaction runs wait for it, then go in the next transaction together:
one lock wait, one plan (dedup across the calls too, as if they had run one after the other in arrival order),
one commit. A lone call after a quiet spell is sent at once; nothing lingers.

A batch that fails for a reason other than the store being unreachable is run again one call per transaction,
so a call that the database refuses fails alone, as it would have without sharing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.store.base import AppendOutcome

# Runs one append transaction, its announcements and wake-ups included: (events, now, not_before, window) → the
# outcomes in event order.
AppendRun = Callable[[Sequence[Event], datetime, "datetime | None", timedelta], Awaitable[list[AppendOutcome]]]

MAX_BATCH_EVENTS = 2000  # events of several calls in one transaction; a single call is never split
MAX_BATCH_BYTES = 8 * 1024 * 1024  # and their encoded size, so one transaction stays small in memory and on the wire


@dataclass(slots=True)
class _Call:
    events: Sequence[Event]
    now: datetime
    not_before: datetime | None
    window: timedelta
    size: int
    taken: bool = False  # in a transaction (or about to be): from then on its outcome is the transaction's
    done: asyncio.Future[list[AppendOutcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def shares_with(self, other: _Call) -> bool:
        """Calls whose options agree can share a plan (the latest `now` of a batch stands for all of them)."""
        return self.not_before == other.not_before and self.window == other.window


class AppendBatcher:
    """Queues this process's appends and runs them in shared transactions, one transaction at a time."""

    def __init__(self, run: AppendRun) -> None:
        self._run = run
        self._queue: list[_Call] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.transactions = 0  # how many append transactions ran (for tests and the benchmarks' curiosity)

    async def append(
        self, events: Sequence[Event], *, now: datetime, not_before: datetime | None, window: timedelta
    ) -> list[AppendOutcome]:
        if self._closed:
            raise UnavailableError("the store is closed")
        call = _Call(events, now, not_before, window, sum(event.size() for event in events))
        # Retrieved here, so a caller cancelled while waiting leaves no "exception was never retrieved" behind.
        call.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.append(call)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain(), name="eventbus-pg-appends")
        try:
            return await asyncio.shield(call.done)
        except asyncio.CancelledError:
            # A caller cancelled (a deadline, a client gone, a forced shutdown) before its call was taken leaves
            # the queue: nothing of it is stored, as before sharing. Once taken, the transaction its events are in
            # ends on its own, committed or not, as a single call's transaction would.
            if not call.taken:
                self._queue.remove(call)
                call.done.cancel()
            raise

    async def close(self) -> None:
        """Refuse new appends and wait for those already queued (the store closes its pool after this); a close
        that is itself cancelled leaves them to finish or fail on their own."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.wait({worker})

    def _next_batch(self) -> list[_Call]:
        first = self._queue[0]
        batch, events, size = [first], len(first.events), first.size
        for call in self._queue[1:]:
            if not call.shares_with(first):
                break  # keep arrival order: a later call never commits before an earlier one
            if events + len(call.events) > MAX_BATCH_EVENTS or size + call.size > MAX_BATCH_BYTES:
                break
            batch.append(call)
            events += len(call.events)
            size += call.size
        del self._queue[: len(batch)]
        for call in batch:
            call.taken = True
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = self._next_batch()
            try:
                await self._together(batch)
            except BaseException as exc:  # cancelled with the loop: nobody may wait forever
                for call in batch + self._queue:
                    if not call.done.done():
                        call.done.set_exception(UnavailableError(f"store unavailable: {exc!r}"))
                self._queue.clear()
                raise

    async def _together(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        events = [event for call in batch for event in call.events]
        now = max(call.now for call in batch)
        self.transactions += 1
        try:
            outcomes = await self._run(events, now, batch[0].not_before, batch[0].window)
        except UnavailableError as exc:
            for call in batch:
                call.done.set_exception(exc)
            return
        except Exception:  # one call's fault must not be all of theirs: each runs alone
            for call in batch:
                await self._alone(call)
            return
        start = 0
        for call in batch:
            end = start + len(call.events)
            call.done.set_result(outcomes[start:end])
            start = end

    async def _alone(self, call: _Call) -> None:
        self.transactions += 1
        try:
            result = await self._run(call.events, call.now, call.not_before, call.window)
        except Exception as exc:  # handed to the caller, who raises it
            call.done.set_exception(exc)
        else:
            call.done.set_result(result)
