"""What the client's Admin calls return: plain frozen dataclasses for subscriptions, deliveries, attempts and raw
inbound requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import json_format

from eventbus.grpc.convert import from_timestamp
from eventbus.v1 import admin_pb2 as pb


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """A subscription's circuit breaker and failure streak."""

    circuit: str  # closed | open
    consecutive_failures: int
    failing_since: datetime | None
    circuit_opened_at: datetime | None
    next_probe_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """A subscription's deliveries by state, and how long the oldest pending one has waited."""

    pending: int
    leased: int
    succeeded: int
    dead: int
    oldest_pending_age: timedelta | None


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """A subscription of a push kind (a webhook endpoint, a plugin destination) as `endpoints show` prints it."""

    id: str
    kind: str
    patterns: tuple[str, ...]
    filter: str | None
    options: dict[str, object]  # as shown by the kind: never a secret
    state: str  # active | paused | disabled
    state_reason: str | None
    retry_schedule: tuple[timedelta, ...]
    rate_limit: float | None
    max_concurrency: int | None
    max_pending_age: timedelta
    ordering: str
    created_at: datetime
    updated_at: datetime | None
    health: HealthStatus
    stats: DeliveryCounts
    revealed: dict[str, str] = field(default_factory=dict)  # "secret", "public_key": shown once

    @property
    def secret(self) -> str | None:
        """The signing secret, only in the answer of create, update with a secret, and rotate."""
        return self.revealed.get("secret")


@dataclass(frozen=True, slots=True)
class AttemptStatus:
    """One try of a delivery: what the destination answered and what was decided."""

    attempt_id: str
    number: int
    started_at: datetime
    duration: timedelta
    status_code: int | None
    error_class: str | None
    error: str | None
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes  # the first 4 KiB
    outcome: str  # succeeded | retry | dead | lease_lost
    next_attempt_at: datetime | None
    probe: bool
    manual: bool


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """One event to one subscription; `attempts` is filled by `get_delivery` and `explain` only."""

    delivery_id: str
    subscription_id: str
    event_id: str
    event_seq: int
    state: str  # pending | leased | succeeded | dead
    attempt_count: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    dead_reason: str | None
    last_error: str | None
    ordering_key: str | None
    manual: bool
    attempts: tuple[AttemptStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryExplanation:
    """Why an event was, or was not (yet), delivered to a subscription."""

    subscription_id: str
    event_id: str
    verdict: str  # not_matched | filtered | not_created | held | pending | in_flight | succeeded | dead
    reasons: tuple[str, ...]
    delivery: DeliveryStatus | None


@dataclass(frozen=True, slots=True)
class RawRequestStatus:
    """The `POST /hooks/{source}` request an event came from, as the gateway kept it (redacted when stored)."""

    request_id: str
    received_at: datetime
    method: str
    path: str
    query: tuple[tuple[str, str], ...]  # names with their values redacted
    headers: tuple[tuple[str, str], ...]
    body: bytes
    remote: str | None


def _time(message: Any, name: str) -> datetime | None:
    return from_timestamp(getattr(message, name)) if message.HasField(name) else None


def _plain_number(value: object) -> object:
    """Struct numbers are doubles: give whole ones back as ints (JSON does not tell them apart either)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_number(v) for v in value]
    return value


def subscription_from_proto(message: pb.Subscription) -> SubscriptionStatus:
    health, stats = message.health, message.stats
    options = _plain_number(json_format.MessageToDict(message.options))  # a map on the wire: sort for a stable order
    return SubscriptionStatus(
        id=message.id,
        kind=message.kind,
        patterns=tuple(message.patterns),
        filter=message.filter or None,
        options=dict(sorted(options.items())) if isinstance(options, dict) else {},
        state=message.state,
        state_reason=message.state_reason or None,
        retry_schedule=tuple(d.ToTimedelta() for d in message.retry_schedule),
        rate_limit=message.rate_limit or None,
        max_concurrency=message.max_concurrency or None,
        max_pending_age=message.max_pending_age.ToTimedelta(),
        ordering=message.ordering,
        created_at=from_timestamp(message.created_at),
        updated_at=_time(message, "updated_at"),
        health=HealthStatus(
            circuit=health.circuit,
            consecutive_failures=health.consecutive_failures,
            failing_since=_time(health, "failing_since"),
            circuit_opened_at=_time(health, "circuit_opened_at"),
            next_probe_at=_time(health, "next_probe_at"),
        ),
        stats=DeliveryCounts(
            pending=stats.pending,
            leased=stats.leased,
            succeeded=stats.succeeded,
            dead=stats.dead,
            oldest_pending_age=stats.oldest_pending_age.ToTimedelta() if stats.HasField("oldest_pending_age") else None,
        ),
        revealed=dict(message.revealed),
    )


def attempt_from_proto(message: pb.Attempt) -> AttemptStatus:
    return AttemptStatus(
        attempt_id=message.id,
        number=message.number,
        started_at=from_timestamp(message.started_at),
        duration=message.duration.ToTimedelta(),
        status_code=message.status_code if message.HasField("status_code") else None,
        error_class=message.error_class or None,
        error=message.error or None,
        response_headers=tuple((h.name, h.value) for h in message.response_headers),
        response_body=message.response_body,
        outcome=message.outcome,
        next_attempt_at=_time(message, "next_attempt_at"),
        probe=message.probe,
        manual=message.manual,
    )


def delivery_from_proto(message: pb.DeliveryRecord) -> DeliveryStatus:
    return DeliveryStatus(
        delivery_id=message.id,
        subscription_id=message.subscription_id,
        event_id=message.event_id,
        event_seq=message.event_seq,
        state=message.state,
        attempt_count=message.attempt_count,
        next_attempt_at=_time(message, "next_attempt_at"),
        first_attempt_at=_time(message, "first_attempt_at"),
        last_attempt_at=_time(message, "last_attempt_at"),
        created_at=from_timestamp(message.created_at),
        finished_at=_time(message, "finished_at"),
        dead_reason=message.dead_reason or None,
        last_error=message.last_error or None,
        ordering_key=message.ordering_key or None,
        manual=message.manual,
        attempts=tuple(attempt_from_proto(a) for a in message.attempts),
    )


def explanation_from_proto(message: pb.Explanation) -> DeliveryExplanation:
    return DeliveryExplanation(
        subscription_id=message.subscription_id,
        event_id=message.event_id,
        verdict=message.verdict,
        reasons=tuple(message.reasons),
        delivery=delivery_from_proto(message.delivery) if message.HasField("delivery") else None,
    )


def raw_request_from_proto(message: pb.RawRequest) -> RawRequestStatus:
    return RawRequestStatus(
        request_id=message.request_id,
        received_at=from_timestamp(message.received_at),
        method=message.method,
        path=message.path,
        query=tuple((h.name, h.value) for h in message.query),
        headers=tuple((h.name, h.value) for h in message.headers),
        body=message.body,
        remote=message.remote if message.HasField("remote") else None,
    )
