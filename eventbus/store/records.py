"""Delivery-side records of the store: deliveries and attempts as read back, attempt results, health rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from eventbus.model import Event
from eventbus.store.base import Settle


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery as stored. `next_attempt_at` is when a pending one is due (a leased one: its lease end)."""

    delivery_id: str
    subscription_id: str
    event_id: str
    event_seq: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    dead_reason: str | None
    last_error: str | None
    ordering_key: str | None
    manual: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a delivery, as recorded with the decision it led to."""

    attempt_id: str
    delivery_id: str
    subscription_id: str
    number: int
    started_at: datetime
    duration: timedelta
    status_code: int | None
    error_class: str | None
    error: str | None
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    outcome: str  # succeeded | retry | dead | lease_lost
    next_attempt_at: datetime | None
    probe: bool
    manual: bool


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What a dispatcher reports after one try: the attempt's facts and the settlement it decided.

    `healthy` feeds the circuit: True (the destination answered well), False (it failed), None (neutral: e.g. the
    destination rejected this one event for good, which says nothing about the destination's health).
    """

    settle: Settle
    number: int
    started_at: datetime
    duration: timedelta
    healthy: bool | None
    status_code: int | None = None
    error_class: str | None = None
    error: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""
    probe: bool = False
    manual: bool = False
    disable_reason: str | None = None  # the destination asked to be disabled (410 Gone)
    alert: bool = False  # a failure the operator must act on: `failing` is published at once (streak's first)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Circuit breaker and auto-disable rules, applied by the store in the transaction that records an attempt."""

    failure_threshold: int = 5  # consecutive failures that open the circuit
    disable_after: timedelta = timedelta(days=5)  # failing (no success) this long disables the subscription
    warn_at: tuple[float, ...] = (0.5, 0.7, 0.9)  # `failing` warnings at these fractions of `disable_after`
    probe_after: timedelta = timedelta(seconds=30)  # first probe after the circuit opens; doubles per failed probe
    max_probe_after: timedelta = timedelta(minutes=5)
    # No failure for this long ends a failing streak (longer than any default retry delay, 10 h).
    failing_gap: timedelta = timedelta(hours=24)

    def probe_delay(self, failed_probes: int) -> timedelta:
        delay: timedelta = self.probe_after * (2 ** min(max(failed_probes, 0), 20))
        return min(delay, self.max_probe_after)


class HealthChangeKind(StrEnum):
    FAILING = "failing"
    DISABLED = "disabled"
    ENABLED = "enabled"
    CIRCUIT_OPENED = "circuit_opened"
    CIRCUIT_CLOSED = "circuit_closed"
    DELIVERY_DEAD = "delivery_dead"
    DELIVERY_RECOVERED = "delivery_recovered"


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A transition worth telling the world about (a system event), decided inside a store transaction."""

    kind: HealthChangeKind
    subscription_id: str
    subscription_kind: str
    at: datetime
    detail: dict[str, object] = field(default_factory=dict)


SystemEvents = Callable[[Sequence[HealthChange]], list[Event]]
"""Turns health changes into events appended in the same transaction (pure and fast: it runs in the writer)."""


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    subscription_id: str | None = None
    event_seq: int | None = None
    state: str | None = None
    after_id: str = ""  # the last id of the previous page (in the order asked)
    limit: int = 100
    newest_first: bool = False
