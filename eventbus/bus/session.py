"""One stream's membership of a consumer group: flow control, leases, acks, extends (transport-free)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from eventbus.bus.retry import next_retry_at
from eventbus.clock import first_of
from eventbus.errors import NotFoundError
from eventbus.store.base import DeadReason, LeasedDelivery, Settle, Settlement, Subscription

if TYPE_CHECKING:
    from eventbus.bus.service import Bus

log = structlog.get_logger("eventbus.groups")
_REMEMBER_EXPIRED = 10_000


class AckStatus(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class AckRequest:
    delivery_id: str
    status: AckStatus | None
    retry_after: timedelta | None = None
    problem: str | None = None  # a malformed ack, answered in its result rather than by ending the stream


@dataclass(frozen=True, slots=True)
class AckOutcome:
    delivery_id: str
    ok: bool
    reason: str = ""


UNKNOWN = "unknown delivery: it was not sent on this stream, or it was settled already"
STALE = "lease lost: the ack deadline passed and the delivery was sent again (or the group was seeked)"


class GroupSession:
    """What one Subscribe stream holds: at most `max_in_flight` leased deliveries, each settled once."""

    def __init__(
        self,
        bus: Bus,
        subscription: Subscription,
        *,
        created: bool,
        max_in_flight: int,
        ack_deadline: timedelta,
    ) -> None:
        self.bus = bus
        self.subscription = subscription
        self.created = created
        self.max_in_flight = max_in_flight
        self.ack_deadline = ack_deadline
        self._in_flight: dict[str, LeasedDelivery] = {}
        # Leases that ran out while in flight: a late ack still succeeds if nobody leased the delivery since.
        self._expired: OrderedDict[str, LeasedDelivery] = OrderedDict()
        self._wake = bus.store.wakeups.register(subscription.id)
        self._closed = False
        self._leasing: asyncio.Future[list[LeasedDelivery]] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._ended: BaseException | None = None
        bus.sessions.add(self)
        bus.active_streams[subscription.id] = bus.active_streams.get(subscription.id, 0) + 1

    def _adopt(self, leasing: asyncio.Future[list[LeasedDelivery]]) -> None:
        if leasing.cancelled() or leasing.exception() is not None:
            return
        for delivery in leasing.result():
            self._expired.pop(delivery.delivery_id, None)
            self._in_flight[delivery.delivery_id] = delivery

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def held(self, now: datetime) -> int:
        """Deliveries this stream holds whose lease has not run out."""
        self._expire_in_flight(now)
        return len(self._in_flight)

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Give these leases back at once (leased but never sent to the consumer)."""
        leases = [(i, self._in_flight.pop(i).lease_token) for i in delivery_ids if i in self._in_flight]
        if leases:
            await self.bus.store.release_leases(leases, now=self.bus.clock.now(), unsent=True)

    def _expire_in_flight(self, now: datetime) -> None:
        for delivery_id, leased in list(self._in_flight.items()):
            if leased.lease_expires_at <= now:
                del self._in_flight[delivery_id]
                self._expired[delivery_id] = leased
        while len(self._expired) > _REMEMBER_EXPIRED:
            self._expired.popitem(last=False)

    async def next_batch(self) -> list[LeasedDelivery]:
        """Wait until deliveries are due and this stream has room for them, lease them, and return them."""
        settings = self.bus.settings
        clock = self.bus.clock
        while True:
            if self._ended is not None:
                raise self._ended
            now = clock.now()
            self._expire_in_flight(now)
            capacity = self.max_in_flight - len(self._in_flight)
            wake_at = now + settings.poll_every
            if capacity > 0:
                self._wake.clear()
                # Shielded: if this stream is cancelled mid-lease, the lease still lands in `_in_flight`, so
                # `close()` gives it back instead of leaving it to run out.
                self._leasing = asyncio.ensure_future(
                    self.bus.store.lease_deliveries(
                        self.subscription.id,
                        limit=min(capacity, settings.lease_batch),
                        lease_for=self.ack_deadline,
                        now=now,
                    )
                )
                self._leasing.add_done_callback(self._adopt)
                leased = await asyncio.shield(self._leasing)
                if leased:
                    return leased
                next_due = await self.bus.store.next_due_at(self.subscription.id)
                if next_due is not None and next_due <= now:
                    # Due deliveries but none leased: either every candidate just died (exhausted, expired:
                    # lease again at once) or the subscription is no longer active (deleted elsewhere: end the
                    # stream; not active: wait for the poll instead of spinning).
                    current = await self.bus.store.get_subscription(self.subscription.id)
                    if current is None:
                        raise NotFoundError(f"group {self.subscription.name or self.subscription.id} was deleted")
                    if current.state != "active":
                        next_due = None
                if next_due is not None:
                    wake_at = min(wake_at, next_due)
            else:
                self._wake.clear()
            if self._in_flight:
                wake_at = min(wake_at, min(d.lease_expires_at for d in self._in_flight.values()))
            if wake_at <= now:
                await asyncio.sleep(0)
                continue
            await first_of(self._wake.wait(), clock.sleep_until(wake_at))

    async def settle(self, acks: Sequence[AckRequest]) -> list[AckOutcome]:
        """Apply a batch of acks; each outcome says whether it took and, if not, why."""
        now = self.bus.clock.now()
        outcomes: dict[int, AckOutcome] = {}
        settles: list[tuple[int, Settle]] = []
        for index, ack in enumerate(acks):
            leased = self._in_flight.get(ack.delivery_id) or self._expired.get(ack.delivery_id)
            if ack.problem is not None:
                outcomes[index] = AckOutcome(ack.delivery_id, False, ack.problem)
            elif ack.status is None:
                outcomes[index] = AckOutcome(ack.delivery_id, False, "status is required: SUCCESS, RETRY or DROP")
            elif leased is None:
                outcomes[index] = AckOutcome(ack.delivery_id, False, UNKNOWN)
            else:
                settles.append((index, self._settlement(ack, leased, now)))
        if settles:
            applied = await self.bus.store.settle_deliveries([s for _, s in settles], now=now)
            for (index, settle), ok in zip(settles, applied, strict=True):
                # Only this lease is done: the delivery may have been leased to this stream again meanwhile.
                self._forget(settle.delivery_id, settle.lease_token)
                outcomes[index] = AckOutcome(settle.delivery_id, ok, "" if ok else STALE)
            self._wake.set()  # room for more
        return [outcomes[i] for i in range(len(acks))]

    def _forget(self, delivery_id: str, lease_token: int) -> None:
        for held in (self._in_flight, self._expired):
            entry = held.get(delivery_id)
            if entry is not None and entry.lease_token == lease_token:
                del held[delivery_id]

    def _settlement(self, ack: AckRequest, leased: LeasedDelivery, now: datetime) -> Settle:
        base = Settle(ack.delivery_id, leased.lease_token, Settlement.SUCCEEDED)
        if ack.status is AckStatus.SUCCESS:
            return base
        if ack.status is AckStatus.DROP:
            return replace(base, outcome=Settlement.DEAD, reason=DeadReason.DROPPED, error="dropped by the consumer")
        if ack.retry_after is not None and leased.attempt < self.subscription.max_attempts:
            # Past the max pending age the delivery would only expire: a longer delay buys nothing (and a huge
            # one would overflow the calendar).
            delay = min(ack.retry_after, self.subscription.max_pending_age)
            return replace(base, outcome=Settlement.RETRY, retry_at=now + delay, error="retry requested")
        retry_at = next_retry_at(schedule=self.subscription.retry_schedule, attempt=leased.attempt, now=now)
        if retry_at is None:
            return replace(base, outcome=Settlement.DEAD, reason=DeadReason.EXHAUSTED, error="retry requested")
        return replace(base, outcome=Settlement.RETRY, retry_at=retry_at, error="retry requested")

    async def extend(self, delivery_ids: Sequence[str], by: timedelta | None) -> list[AckOutcome]:
        """Push the ack deadline of in-flight deliveries to now + `by` (default: the stream's ack deadline)."""
        now = self.bus.clock.now()
        self._expire_in_flight(now)
        span = min(by or self.ack_deadline, self.bus.settings.max_ack_deadline)
        until = now + span
        known = {i: self._in_flight[i] for i in delivery_ids if i in self._in_flight}
        applied = await self.bus.store.extend_leases([(i, d.lease_token) for i, d in known.items()], until=until)
        results = dict(zip(known, applied, strict=True))
        outcomes = []
        for delivery_id in delivery_ids:
            if delivery_id not in results:
                reason = STALE if delivery_id in self._expired else UNKNOWN
                outcomes.append(AckOutcome(delivery_id, False, reason))
                continue
            lease = known[delivery_id]
            if results[delivery_id]:
                # The store has it leased to us until `until` now, even if our clock moved it to `_expired`
                # while the write was in flight; a newer lease of the same delivery is left alone.
                current = self._in_flight.get(delivery_id) or self._expired.get(delivery_id)
                if current is None or current.lease_token == lease.lease_token:
                    self._expired.pop(delivery_id, None)
                    self._in_flight[delivery_id] = replace(lease, lease_expires_at=until)
                outcomes.append(AckOutcome(delivery_id, True))
            else:
                self._forget(delivery_id, lease.lease_token)
                outcomes.append(AckOutcome(delivery_id, False, STALE))
        return outcomes

    def end(self, error: BaseException) -> None:
        """End this stream's membership from outside (its group was deleted): `next_batch` raises `error`."""
        self._ended = error
        self._wake.set()

    async def close(self) -> None:
        """Leave the group: give back what is in flight; an ephemeral group goes with its stream.

        Safe to call twice and from two places (the stream's end, the server's shutdown): both wait for one close.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        bus, subscription_id = self.bus, self.subscription.id
        bus.store.wakeups.unregister(subscription_id, self._wake)
        remaining = bus.active_streams.get(subscription_id, 1) - 1
        if remaining > 0:
            bus.active_streams[subscription_id] = remaining
        else:
            bus.active_streams.pop(subscription_id, None)
        now = bus.clock.now()
        try:
            if self._leasing is not None and not self._leasing.done():
                await asyncio.wait([self._leasing])
            if self.subscription.ephemeral and remaining <= 0:
                await bus.store.delete_subscription(subscription_id, now=now)
            else:
                leases = [(d.delivery_id, d.lease_token) for d in self._in_flight.values()]
                await bus.store.release_leases(leases, now=now)
                await bus.store.touch_subscriptions([subscription_id], now=now)
        except Exception as exc:  # the leases run out by themselves; closing must not fail the stream's end
            log.warning("group_leave_failed", subscription_id=subscription_id, error=str(exc))
        self._in_flight.clear()
        bus.sessions.discard(self)
