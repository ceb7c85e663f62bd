"""The dispatcher: leases due deliveries of push kinds (webhooks, destinations), sends them, records every attempt.

One pump per subscription with work, so a slow, hanging or failing destination only ever holds its own
concurrency slots; deliveries are leased in small batches, never read all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from eventbus import tracing
from eventbus.bus.health import system_events
from eventbus.bus.kinds import DeliveryKind, KindRegistry, SendResult, SendVerdict
from eventbus.bus.ratelimit import SendLimits, TokenBucket, shared_rate
from eventbus.bus.service import Bus
from eventbus.bus.settlement import decide, record_while_leased
from eventbus.clock import first_of
from eventbus.store.base import LeasedDelivery, Subscription
from eventbus.store.limits import SendGrant, SendLease, SharedSendLimits
from eventbus.store.records import HealthPolicy

log = structlog.get_logger("eventbus.dispatch")
# A store that refused a send for want of a slot held by another process is asked again after this (doubling up
# to the second figure, in seconds) or at once when a send of this process ends.
_CLAIM_BACKOFF = (0.01, 0.25)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    lease_batch: int = 64  # most deliveries leased per store call
    lease_ahead: int = 4  # a subscription holds up to this many times its max concurrency leased (queued + sent)
    max_in_flight: int = 1024  # sends at once in this process, every subscription together
    lease_margin: timedelta = timedelta(seconds=30)  # a lease outlives the attempt timeout by this much
    poll_every: timedelta = timedelta(seconds=1)  # wake-ups are hints; polling is the truth
    stop_grace: float = 5.0  # seconds in-flight sends get to finish at shutdown
    health: HealthPolicy = field(default_factory=HealthPolicy)


@dataclass(slots=True)
class _Sender:
    subscription: Subscription
    kind: DeliveryKind
    queue: deque[LeasedDelivery]
    changed: asyncio.Event  # set by the store when the subscription changed: send nothing until it is re-read


class Dispatcher:
    """Sends the deliveries of every subscription whose kind is registered in `kinds`."""

    def __init__(self, bus: Bus, kinds: KindRegistry, settings: DispatchSettings | None = None) -> None:
        self.bus = bus
        self.kinds = kinds
        self.settings = settings or DispatchSettings()
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._turn = 0  # round robin over the waiting subscriptions when the process is full
        self._senders: dict[str, _Sender] = {}  # what a running pump has queued, and the settings to send with
        self._recheck: set[str] = set()
        self._sends: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._total_in_flight = 0
        self._rates = SendLimits()  # this process's rate limits (PostgreSQL grants them across processes too)
        self._slot_freed: dict[str, asyncio.Event] = {}  # per subscription: one of its slots (or global room) freed
        # A store shared by many processes (PostgreSQL) grants every send, so that a subscription's concurrency and
        # rate limits hold across all of them; SQLite has one process per file and the limits here are exact.
        self._shared = bus.store if isinstance(bus.store, SharedSendLimits) else None
        self._claiming: set[str] = set()  # subscriptions whose sends are being granted by the store
        self._claim_retry: dict[str, datetime] = {}  # refused: no asking again before this
        self._claim_backoff: dict[str, float] = {}  # refused for a slot (not for the rate): the current delay
        self._wake = bus.store.wakeups.register_any()
        self._task: asyncio.Task[None] | None = None
        # For `quiet()`: what the loop ("") and each pump wait on while parked, and the sends out at a destination.
        self._parked: dict[str, list[asyncio.Future[object]]] = {}
        self._at_destination = 0

    def in_flight(self, subscription_id: str) -> int:
        return self._in_flight.get(subscription_id, 0)

    def wake(self) -> None:
        self._wake.set()

    def quiet(self, *, held_elsewhere: int = 0) -> bool:
        """Whether this dispatcher can do nothing more until something outside it happens (a publish, a wake-up,
        the clock moving, a destination answering): its loop and every pump are parked on waits none of which has
        fired, and no lease, record, release or store grant is under way; of the sends, at most `held_elsewhere`
        are out at their destinations (the requests the destinations are known to hold). A barrier for tests that
        never sleeps: see tests/delivery/helpers.py `settle`."""
        if len(self._sends) > self._at_destination or self._at_destination > held_elsewhere:
            return False
        running = [key for key, task in (("", self._task), *self._pumps.items()) if task is not None]
        for key in running:
            waits = self._parked.get(key)
            if waits is None or any(w.done() for w in waits):
                return False
        return True

    async def _park(self, key: str, *awaitables: Awaitable[object]) -> None:
        """`first_of(*awaitables)`, with the loop (`key` "") or pump (its subscription id) known to be parked."""
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(a) for a in awaitables]
        self._parked[key] = waits
        try:
            await first_of(*waits)
        finally:
            self._parked.pop(key, None)

    async def _at(self, sending: Awaitable[SendResult]) -> SendResult:
        """A send while it is out at its destination (for `quiet()`)."""
        self._at_destination += 1
        try:
            return await sending
        finally:
            self._at_destination -= 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eventbus-dispatcher")

    async def stop(self, grace: float | None = None, *, hurry: asyncio.Event | None = None) -> None:
        """Stop leasing, give in-flight sends a grace period (cut short by `hurry`), then cancel them (recorded
        as interrupted attempts, due again at once)."""
        grace = self.settings.stop_grace if grace is None else grace
        tasks = [t for t in (self._task, *self._pumps.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sends:
            await first_of(asyncio.wait(list(self._sends), timeout=grace), *([hurry.wait()] if hurry else []))
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        self.bus.store.wakeups.unregister_any(self._wake)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self.bus.clock.now()
            wake_at = now + self.settings.poll_every
            try:
                for subscription_id, due_at in await self.bus.store.due_subscriptions(self.kinds.names, now=now):
                    if due_at <= now:
                        self._ensure_pump(subscription_id)
                    else:
                        wake_at = min(wake_at, due_at)
            except Exception as exc:  # the store is down: keep trying, every poll
                log.warning("dispatch_poll_failed", error=str(exc))
            await self._park("", self._wake.wait(), self.bus.clock.sleep_until(wake_at))

    def _ensure_pump(self, subscription_id: str) -> None:
        if subscription_id in self._pumps:
            self._recheck.add(subscription_id)
        else:
            task = asyncio.create_task(self._pump(subscription_id), name=f"eventbus-pump-{subscription_id}")
            self._pumps[subscription_id] = task
            task.add_done_callback(lambda _: self._pump_done(subscription_id))

    def _pump_done(self, subscription_id: str) -> None:
        self._pumps.pop(subscription_id, None)
        # The loop saw work for it while the pump was finishing (and so did not start another): look again, or
        # that work would wait for the next poll. Only then: a subscription whose due deliveries are all held
        # back (ordering) would otherwise spin.
        if subscription_id in self._recheck:
            self._recheck.discard(subscription_id)
            self._wake.set()

    async def _pump(self, subscription_id: str) -> None:
        try:
            await self._lease_and_send(subscription_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: the loop starts a new pump on its next round
            log.warning("dispatch_pump_failed", subscription_id=subscription_id, error=str(exc))

    async def _lease_and_send(self, subscription_id: str) -> None:
        """Send one subscription's due deliveries while it has them, within its limits.

        Leases run ahead of the sends into the subscription's queue (up to `lease_ahead - 1` times its
        concurrency, a batch per store call); a slot that frees takes the next queued delivery at once, without
        waiting for this pump, unless the store said the subscription changed (paused, circuit open, new settings):
        then nothing more is sent until the pump has read it again. What is still queued when the pump stops, or
        when the circuit opens, is given back uncounted.
        """
        store, clock = self.bus.store, self.bus.clock
        loop = asyncio.get_running_loop()
        queue: deque[LeasedDelivery] = deque()
        exhausted = False
        changed = store.wakeups.register(subscription_id)
        subscription: Subscription | None = None
        read_at = 0.0
        try:
            while True:
                if subscription is None or changed.is_set() or loop.time() - read_at > 1.0:
                    changed.clear()
                    read_at = loop.time()
                    subscription = await store.get_subscription(subscription_id)
                    if subscription is not None and subscription.health.circuit == "open":
                        # Held from now on: what was leased ahead goes back without using an attempt (a probe or
                        # a resend, which an open circuit lets through, stays).
                        held = [d for d in queue if not (d.probe or d.manual)]
                        if held:
                            kept = [d for d in queue if d.probe or d.manual]
                            queue.clear()
                            queue.extend(kept)
                            await self._release(*held, unsent=True)
                kind = self.kinds.find(subscription.kind) if subscription is not None else None
                if subscription is None or kind is None or subscription.state != "active":
                    self._rates.forget(subscription_id)
                    return
                self._senders[subscription_id] = _Sender(subscription, kind, queue, changed)
                self._fill_slots(subscription_id)
                if exhausted and not queue and subscription_id not in self._claiming:
                    return
                limit = subscription.max_concurrency or kind.default_max_concurrency
                # Queue up to (lease_ahead - 1) × the concurrency: each lease then brings a large batch, and a queued
                # delivery waits at most that many attempt timeouts, within its lease.
                want = min(limit * (self.settings.lease_ahead - 1) - len(queue), self.settings.lease_batch)
                now = clock.now()
                buckets = self._rates.of(subscription, kind, now)
                wake_at = None
                if buckets:
                    # Rate-limited: lease no more than can be sent now (tokens are taken as each send starts).
                    want = min(want, *(b.available(now) for b in buckets))
                    if want <= 0:
                        wake_at = max(b.next_token_at(now) for b in buckets)
                # Lease in batches: when the queue has room for a concurrency's worth, or is empty.
                if not exhausted and want > 0 and (want >= limit or not queue):
                    leased = await self._lease(subscription, kind, want, now)
                    queue.extend(leased)
                    exhausted = len(leased) < want
                    continue
                slot_freed = self._slot_freed.setdefault(subscription_id, asyncio.Event())
                slot_freed.clear()
                waits: list[Awaitable[object]] = [slot_freed.wait(), changed.wait()]
                if wake_at is not None:
                    waits.append(clock.sleep_until(wake_at))
                retry_at = self._claim_retry.get(subscription_id)
                if retry_at is not None and queue:
                    waits.append(clock.sleep_until(retry_at))
                await self._park(subscription_id, *waits)
        finally:
            self._slot_freed.pop(subscription_id, None)
            self._claim_retry.pop(subscription_id, None)
            self._claim_backoff.pop(subscription_id, None)
            sender = self._senders.get(subscription_id)
            if sender is not None and sender.queue is queue:
                del self._senders[subscription_id]
            store.wakeups.unregister(subscription_id, changed)
            held = list(queue)
            queue.clear()  # before any await: a slot freeing meanwhile must not send what is being given back
            if held:
                await asyncio.shield(self._release(*held, unsent=True))

    async def _lease(
        self, subscription: Subscription, kind: DeliveryKind, want: int, now: datetime
    ) -> list[LeasedDelivery]:
        """Lease up to `want`; if the pump is cancelled meanwhile (shutdown), what the store leased goes back."""
        leasing = asyncio.ensure_future(
            self.bus.store.lease_deliveries(
                subscription.id,
                limit=want,
                # Long enough for every queued delivery to wait its turn and still be sent.
                lease_for=kind.attempt_timeout(subscription) * self.settings.lease_ahead + self.settings.lease_margin,
                now=now,
                system_events=system_events,
            )
        )
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            leased = await leasing
            if leased:
                await self._release(*leased, unsent=True)
            raise

    def _fill_slots(self, subscription_id: str) -> None:
        """Start queued deliveries of this subscription while it has free slots (called when one frees)."""
        sender = self._senders.get(subscription_id)
        if sender is None or sender.changed.is_set():
            return  # the subscription changed (paused? circuit open?): its pump reads it before anything more goes
        limit = sender.subscription.max_concurrency or sender.kind.default_max_concurrency
        timeout = sender.kind.attempt_timeout(sender.subscription)
        now = self.bus.clock.now()
        if self._shared is not None and (
            subscription_id in self._claiming or now < self._claim_retry.get(subscription_id, now)
        ):
            return  # the store is granting its last ones, or refused a moment ago
        buckets = self._rates.of(sender.subscription, sender.kind, now)
        stale: list[LeasedDelivery] = []
        claimed: list[LeasedDelivery] = []
        while sender.queue and self.in_flight(subscription_id) < limit and self._has_room():
            if any(b.available(now) < 1 for b in buckets):
                break  # the pump wakes at the next token
            delivery = sender.queue.popleft()
            if delivery.lease_expires_at - now < timeout + self.settings.lease_margin / 2:
                stale.append(delivery)  # queued too long (a slow destination): sending could outlive the lease
                continue
            for bucket in buckets:
                bucket.take(1)
            if self._shared is None:
                self._start_send(sender.subscription, sender.kind, delivery)
            else:  # counted in flight while the store is asked
                self._count(subscription_id, 1)
                claimed.append(delivery)
        if stale:
            self._spawn(self._release(*stale, unsent=True))
        if claimed:
            self._claiming.add(subscription_id)
            self._spawn(self._claim(sender, claimed, buckets))

    async def _claim(self, sender: _Sender, claimed: list[LeasedDelivery], buckets: list[TokenBucket]) -> None:
        """Ask the shared store to grant `claimed` (taken off the queue, counted in flight): send what it grants,
        put the rest back at the head of the queue. The store counts sends, not leases: what is leased ahead and
        queued here holds no slot of the subscription."""
        assert self._shared is not None
        subscription, kind = sender.subscription, sender.kind
        subscription_id = subscription.id
        grant = SendGrant(0)
        try:
            grant = await self._shared.acquire_send_slots(
                subscription_id,
                [SendLease(d.delivery_id, d.lease_token, d.probe or d.manual) for d in claimed],
                max_concurrency=subscription.max_concurrency or kind.default_max_concurrency,
                rate=subscription.rate_limit,
                sending_for=kind.attempt_timeout(subscription) + self.settings.lease_margin / 2,
                now=self.bus.clock.now(),
                shared=shared_rate(subscription, kind),
            )
        except asyncio.CancelledError:  # shutting down: nothing was sent
            self._count(subscription_id, -len(claimed))
            await asyncio.shield(self._release(*claimed, unsent=True))
            raise
        except Exception as exc:  # the store is down: asked again after a while (the leases outlive it)
            log.warning("dispatch_claim_failed", subscription_id=subscription_id, error=str(exc))
        finally:
            self._claiming.discard(subscription_id)
        go, back = claimed[: grant.granted], claimed[grant.granted :]
        for bucket in buckets:
            bucket.take(-len(back))  # their tokens were not used: given back
        current = self._senders.get(subscription_id)
        if current is None or current.queue is not sender.queue:  # its pump ended meanwhile: give them all back
            self._count(subscription_id, -len(claimed))
            await self._release(*claimed, unsent=True)
            return
        self._count(subscription_id, -len(back))
        for delivery in go:
            self._start_send(current.subscription, current.kind, delivery, counted=True)
        current.queue.extendleft(reversed(back))
        if grant.held:
            current.changed.set()  # paused or circuit open: the pump reads it before anything more goes
        elif back:
            if grant.retry_at is not None:  # the shared bucket is empty: its next token
                self._claim_backoff.pop(subscription_id, None)
                self._claim_retry[subscription_id] = grant.retry_at
            else:  # every slot is taken, by other processes too: ask again in a while (sooner after a grant)
                delay = _CLAIM_BACKOFF[0] if go else self._claim_backoff.get(subscription_id, _CLAIM_BACKOFF[0]) * 2
                self._claim_backoff[subscription_id] = delay = min(delay, _CLAIM_BACKOFF[1])
                self._claim_retry[subscription_id] = self.bus.clock.now() + timedelta(seconds=delay)
        else:
            self._claim_backoff.pop(subscription_id, None)
            self._claim_retry.pop(subscription_id, None)
            self._fill_slots(subscription_id)  # room may have freed meanwhile
        freed = self._slot_freed.get(subscription_id)
        if freed is not None:
            freed.set()  # the pump waits for this when its queue was empty, or for the retry

    def _count(self, subscription_id: str, change: int) -> None:
        """Count deliveries taken off the queue in flight before they are sent (or not, after all)."""
        was_full = not self._has_room()
        remaining = self.in_flight(subscription_id) + change
        if remaining > 0:
            self._in_flight[subscription_id] = remaining
        else:
            self._in_flight.pop(subscription_id, None)
        self._total_in_flight += change
        if was_full and self._has_room():
            for freed in self._slot_freed.values():
                freed.set()

    def _has_room(self) -> bool:
        return self._total_in_flight < self.settings.max_in_flight

    def _start_send(
        self, subscription: Subscription, kind: DeliveryKind, delivery: LeasedDelivery, *, counted: bool = False
    ) -> None:
        if not counted:
            self._in_flight[subscription.id] = self.in_flight(subscription.id) + 1
            self._total_in_flight += 1
        task = asyncio.create_task(self._send(subscription, kind, delivery))
        self._sends.add(task)
        task.add_done_callback(self._send_done)

    def _free_slot(self, subscription_id: str) -> None:
        """The destination is done with this request: its slot takes the next queued delivery (recording the
        attempt comes after, off the slot)."""
        remaining = self.in_flight(subscription_id) - 1
        if remaining > 0:
            self._in_flight[subscription_id] = remaining
        else:
            self._in_flight.pop(subscription_id, None)
        if subscription_id in self._claim_backoff:  # a slot the store counted is free: ask it at once
            self._claim_retry.pop(subscription_id, None)
        self._fill_slots(subscription_id)
        freed = self._slot_freed.get(subscription_id)
        if freed is not None:
            freed.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _send_done(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        self._total_in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery_send_failed", error=repr(task.exception()))
        if self._total_in_flight == self.settings.max_in_flight - 1:  # the process was full: everyone may go on
            waiting = list(self._senders)
            if waiting:  # a different subscription first each time, so none waits for ever behind the others
                self._turn = (self._turn + 1) % len(waiting)
                for subscription_id in waiting[self._turn :] + waiting[: self._turn]:
                    self._fill_slots(subscription_id)
            for freed in self._slot_freed.values():
                freed.set()

    async def _send(self, subscription: Subscription, kind: DeliveryKind, delivery: LeasedDelivery) -> None:
        clock = self.bus.clock
        started_at = clock.now()
        started = time.monotonic()
        try:
            # The delivery's ids bound for what the kind logs, and its client span when tracing is on.
            result = await self._at(tracing.send_delivery(kind, subscription, delivery, now=started_at))
        except asyncio.CancelledError:
            # Shutting down mid-request: the receiver may have it, so it counts, and is logged, as an attempt;
            # the delivery is due again at once (from the next process to serve it).
            self._free_slot(subscription.id)
            interrupted = SendResult(
                SendVerdict.RETRY, error_class="interrupted", error="the server stopped during the attempt"
            )
            await asyncio.shield(self._record(subscription, delivery, interrupted, started_at, started, wait=False))
            raise
        except Exception as exc:  # a kind that raises is contained: the delivery is retried, the failure logged
            log.exception("delivery_send_crashed", subscription_id=subscription.id, delivery_id=delivery.delivery_id)
            result = SendResult(SendVerdict.RETRY, error_class="internal", error=f"{type(exc).__name__}: {exc}")
        if result.verdict is SendVerdict.SUCCESS and self._shared is None:
            # A healthy destination's next send need not wait for this record to commit (a shared store counts
            # the send until its record commits: then the slot is freed after it, below).
            self._free_slot(subscription.id)
            await self._record(subscription, delivery, result, started_at, started)
            return
        # A failure is recorded first: the circuit must see it before the next send goes (else a failing
        # destination gets `max_concurrency` sends more than the threshold allows).
        try:
            await self._record(subscription, delivery, result, started_at, started)
        finally:
            self._free_slot(subscription.id)

    async def _record(
        self,
        subscription: Subscription,
        delivery: LeasedDelivery,
        result: SendResult,
        started_at: datetime,
        started: float,
        *,
        wait: bool = True,
    ) -> None:
        """Log and settle the attempt in one transaction (with `wait`: tried again while the lease lasts)."""
        duration = timedelta(seconds=time.monotonic() - started)
        now = self.bus.clock.now()
        attempt = decide(subscription, delivery, result, started_at, duration, now)
        lease_left = delivery.lease_expires_at - now if wait else timedelta(0)
        try:
            applied, _ = await record_while_leased(
                self.bus.store,
                attempt,
                policy=self.settings.health,
                now=now,
                lease_left=lease_left,
                system_events=system_events,
            )
        except Exception as exc:  # the lease runs out and the delivery is sent again: at least once
            log.error("delivery_record_failed", delivery_id=delivery.delivery_id, error=str(exc))
            return
        tracing.log_attempt(subscription, delivery, result, attempt, applied=applied, duration=duration)
        self.bus.metrics.attempted(subscription, attempt.settle.outcome if applied else "lease_lost", duration)

    async def _release(self, *deliveries: LeasedDelivery, unsent: bool = False) -> None:
        try:
            await self.bus.store.release_leases(
                [(d.delivery_id, d.lease_token) for d in deliveries], now=self.bus.clock.now(), unsent=unsent
            )
        except Exception as exc:  # the leases run out by themselves
            log.warning("delivery_release_failed", deliveries=len(deliveries), error=str(exc))
