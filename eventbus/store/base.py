"""The store contract: one `typing.Protocol` that every backend implements, and the records it speaks in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from eventbus.model import Event, StoredEvent

if TYPE_CHECKING:
    from eventbus.store.records import (
        Attempt,
        AttemptResult,
        DeliveryQuery,
        DeliveryRecord,
        HealthChange,
        HealthPolicy,
        SystemEvents,
    )

DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)
)
DEFAULT_MAX_PENDING_AGE = timedelta(days=3)


class DeliveryState(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class DeadReason(StrEnum):
    EXHAUSTED = "exhausted"
    GONE = "gone"
    DROPPED = "dropped"
    EXPIRED = "expired"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a new subscription's backlog begins: `latest` (nothing old), `earliest`, a seq, or a time."""

    edge: str = "latest"  # "latest" | "earliest" | "seq" | "time"
    seq: int | None = None
    time: datetime | None = None


class SubscriptionState(StrEnum):
    """`paused`: deliveries are created and held. `disabled`: none are created, pending ones are held."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class Ordering(StrEnum):
    NONE = "none"
    SUBJECT = "subject"  # one subject strictly in seq order; a failing subject holds only itself


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What creating a subscription takes. `patterns` and `filter_json` arrive normalised by the caller."""

    kind: str
    name: str | None
    patterns: tuple[str, ...]
    filter_json: str | None = None
    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE
    max_pending_age: timedelta = DEFAULT_MAX_PENDING_AGE
    ephemeral: bool = False
    options: dict[str, object] = field(default_factory=dict)
    rate_limit: float | None = None  # deliveries per second; None: unlimited
    max_concurrency: int | None = None  # None: the kind's default
    ordering: Ordering = Ordering.NONE
    secrets: dict[str, object] = field(default_factory=dict)  # kind-specific credentials, never listed
    state: SubscriptionState = SubscriptionState.ACTIVE


@dataclass(frozen=True, slots=True)
class SubscriptionHealth:
    """The delivery health of a subscription: its circuit and how long it has been failing."""

    circuit: str = "closed"  # "closed" | "open"
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    circuit_opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    warnings_sent: int = 0


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stored subscription of any kind (a gRPC consumer group is kind `grpc`)."""

    id: str
    kind: str
    name: str | None
    patterns: tuple[str, ...]
    filter_json: str | None
    retry_schedule: tuple[timedelta, ...]
    max_pending_age: timedelta
    ephemeral: bool
    state: str
    created_at: datetime
    last_active_at: datetime
    options: dict[str, object]
    backfilling: bool
    rate_limit: float | None = None
    max_concurrency: int | None = None
    ordering: Ordering = Ordering.NONE
    secrets: dict[str, object] = field(default_factory=dict, repr=False)
    state_reason: str | None = None
    updated_at: datetime | None = None
    health: SubscriptionHealth = field(default_factory=SubscriptionHealth)

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first plus one per retry delay."""
        return len(self.retry_schedule) + 1


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """One appended event: its ids, and whether (source, id) was a duplicate inside the dedup window."""

    event_id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class LeasedDelivery:
    """A delivery leased to one worker: settle it with `lease_token`, which fences off stale holders."""

    delivery_id: str
    subscription_id: str
    event: StoredEvent
    attempt: int
    first_attempt_at: datetime
    lease_token: int
    lease_expires_at: datetime
    probe: bool = False  # the one delivery an open circuit lets through to test the destination
    manual: bool = False  # a resend: one attempt outside the schedule
    pending_since: datetime | None = None  # when it was first due (or re-queued): max pending age counts from it


class Settlement(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Settle:
    """How a leased delivery ends this attempt: succeeded, retried at `retry_at`, or dead with `reason`."""

    delivery_id: str
    lease_token: int
    outcome: Settlement
    retry_at: datetime | None = None
    reason: DeadReason | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    pending: int
    leased: int
    succeeded: int
    dead: int
    oldest_pending_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of the log in seq order, after `after_seq`; pattern matching is done by the caller."""

    after_seq: int = 0
    limit: int = 100
    source: str | None = None
    subject: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None


class Wakeups:
    """In-process wake-up hints: a subscription's waiters are woken when it may have new due deliveries."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._any: set[asyncio.Event] = set()  # woken for every subscription (the dispatcher)

    def register_any(self) -> asyncio.Event:
        event = asyncio.Event()
        self._any.add(event)
        return event

    def unregister_any(self, event: asyncio.Event) -> None:
        self._any.discard(event)

    def register(self, subscription_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(subscription_id, set()).add(event)
        return event

    def unregister(self, subscription_id: str, event: asyncio.Event) -> None:
        waiters = self._events.get(subscription_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._events[subscription_id]

    def notify(self, subscription_ids: Iterable[str]) -> None:
        woken = False
        for subscription_id in subscription_ids:
            woken = True
            for event in self._events.get(subscription_id, ()):
                event.set()
        if woken:
            for event in self._any:
                event.set()


class Store(Protocol):
    """Durable events, subscriptions and deliveries. Every method is atomic; `now` comes from the caller's clock."""

    wakeups: Wakeups

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `UnavailableError` unless the store answers."""
        ...

    async def append(
        self,
        events: Sequence[Event],
        *,
        now: datetime,
        not_before: datetime | None,
        dedup_window: timedelta,
        only_subscription: str | None = None,
    ) -> list[AppendOutcome]:
        """Store events (all or none) and fan each new one out to every matching active subscription.

        With `only_subscription` (a test send) no matcher is consulted: each new event gets exactly one delivery,
        to that subscription (held if it is paused; `FailedPreconditionError` if it is disabled). Each new event
        is also counted in the event-type catalogue, in the same transaction.
        """
        ...

    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    async def find_event(self, source: str, id: str) -> StoredEvent | None:
        """The latest event with this (source, id)."""
        ...

    async def list_events(self, query: EventQuery) -> list[StoredEvent]: ...

    async def last_seq(self) -> int: ...

    async def create_subscription(
        self, spec: SubscriptionSpec, *, start: StartPosition, now: datetime
    ) -> tuple[Subscription, bool]:
        """Create it, or return the live one of the same kind and name; True when created."""
        ...

    async def get_subscription(self, subscription_id: str) -> Subscription | None: ...

    async def find_subscription(self, kind: str, name: str) -> Subscription | None: ...

    async def list_subscriptions(self, kind: str | None, *, after_id: str, limit: int) -> list[Subscription]:
        """A page in id order; `kind` None: every kind the server pushes to (all but gRPC consumer groups)."""
        ...

    async def delete_subscription(
        self, subscription_id: str, *, now: datetime, idle_before: datetime | None = None
    ) -> bool:
        """Stop it at once (no more fan-out or leases); its deliveries are purged in batches afterwards.

        With `idle_before`, only if it has been inactive since before then (checked in the same transaction).
        """
        ...

    async def purge_deleted(self, *, limit: int) -> int:
        """Remove up to `limit` rows left behind by deleted subscriptions; 0 when none remain."""
        ...

    async def backfill(self, subscription_id: str, *, now: datetime, limit: int) -> bool:
        """Create deliveries for the next `limit` events of the subscription's start range; False when done."""
        ...

    async def pending_backfills(self) -> list[str]: ...

    async def seek_subscription(self, subscription_id: str, *, start: StartPosition, now: datetime) -> None:
        """Drop its pending and leased deliveries and backfill from `start` up to the current end of the log."""
        ...

    async def touch_subscriptions(self, subscription_ids: Sequence[str], *, now: datetime) -> None: ...

    async def idle_subscriptions(
        self, kind: str, *, ephemeral_before: datetime, durable_before: datetime
    ) -> list[str]: ...

    async def lease_deliveries(
        self,
        subscription_id: str,
        *,
        limit: int,
        lease_for: timedelta,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[LeasedDelivery]:
        """Lease up to `limit` due deliveries (pending and due, or leased with the lease run out), oldest first.

        Only an active subscription's; with ordering `subject` only the head of each subject; with the circuit
        open only one probe, once `next_probe_at` has come. Deliveries past their attempts or max pending age die
        here (`exhausted`, `expired`) instead, announced through `system_events` in the same transaction.
        """
        ...

    async def record_attempt(
        self, result: AttemptResult, *, policy: HealthPolicy, now: datetime, system_events: SystemEvents | None
    ) -> tuple[bool, list[HealthChange]]:
        """Log the attempt, settle the delivery (fenced by its lease token) and apply the health rules, atomically.

        Returns whether the lease was still held (the attempt is logged either way) and the health changes, which
        `system_events` turns into events appended in the same transaction.
        """
        ...

    async def due_subscriptions(self, kinds: Sequence[str], *, now: datetime) -> list[tuple[str, datetime]]:
        """Active subscriptions of these kinds that have deliveries to send, with when the first is due."""
        ...

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None: ...

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]: ...

    async def list_attempts(self, delivery_id: str) -> list[Attempt]: ...

    async def ordering_blocker(self, delivery: DeliveryRecord) -> DeliveryRecord | None:
        """The earlier delivery of the same subject that holds this one back (ordering `subject`), if any."""
        ...

    async def set_subscription_state(
        self,
        subscription_id: str,
        state: SubscriptionState,
        *,
        reason: str | None,
        now: datetime,
        system_events: SystemEvents | None = None,
    ) -> list[HealthChange]:
        """Pause, resume, disable, enable; leaving `disabled` resets the health record (circuit closed)."""
        ...

    async def update_subscription(
        self,
        subscription_id: str,
        changes: dict[str, object],
        *,
        now: datetime,
        if_updated_at: datetime | None = None,
    ) -> None:
        """Change settings, named as `Subscription` attributes (patterns, filter_json, options, secrets, ...).

        With `if_updated_at`, only if nobody changed it since (else `ConcurrentUpdateError`): a read-modify-write
        such as a secret rotation never loses a concurrent one.
        """
        ...

    async def resend_delivery(self, delivery_id: str, *, now: datetime) -> DeliveryRecord:
        """Due now: a dead or succeeded delivery gets one manual attempt, a pending one its next attempt now."""
        ...

    async def recover_deliveries(
        self, subscription_id: str, *, since: datetime, include_pending: bool, limit: int, now: datetime
    ) -> list[tuple[str, str]]:
        """Re-queue dead (and optionally pending) deliveries created since `since`: (delivery_id, event_id) each."""
        ...

    async def replay(
        self, subscription_id: str, *, patterns: Sequence[str] | None, since: datetime, now: datetime
    ) -> int:
        """Backfill events received since `since` that match `patterns` (default: its own); the last seq covered."""
        ...

    async def settle_deliveries(self, settles: Sequence[Settle], *, now: datetime) -> list[bool]:
        """Apply each settlement if its lease token is still current; False where the lease was lost."""
        ...

    async def extend_leases(self, leases: Sequence[tuple[str, int]], *, until: datetime) -> list[bool]: ...

    async def release_leases(self, leases: Sequence[tuple[str, int]], *, now: datetime, unsent: bool = False) -> int:
        """Give leases back (shutdown, stream gone): the deliveries are due again at once.

        `unsent`: they never left this process, so the attempt their lease counted is taken back.
        """
        ...

    async def next_due_at(self, subscription_id: str) -> datetime | None: ...

    async def subscription_stats(self, subscription_id: str) -> SubscriptionStats: ...

    async def prune(self, *, older_than: datetime, limit: int) -> int:
        """Delete up to `limit` finished deliveries and events older than `older_than`; never pending ones."""
        ...
