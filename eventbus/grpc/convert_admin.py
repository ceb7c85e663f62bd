"""Protobuf ⇄ service layer for the Admin subscription, delivery and source calls: requests in, records out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta

from google.protobuf import json_format, struct_pb2

from eventbus.bus.deliveries import EventRef, Explanation
from eventbus.bus.sources import SourceInfo, SourceInput
from eventbus.bus.subscriptions import SubscriptionInfo, SubscriptionInput
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.convert import from_duration, from_timestamp, to_duration, to_timestamp
from eventbus.store.records import Attempt, DeliveryRecord
from eventbus.v1 import admin_pb2 as pb


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, object]:
    decoded = json_format.MessageToDict(struct)
    if not isinstance(decoded, dict):  # a Struct is always an object; guard the decoder all the same
        raise InvalidArgumentError.for_field("options", "must be an object")
    return decoded


def dict_to_struct(values: Mapping[str, object]) -> struct_pb2.Struct:
    """JSON-safe first: a kind may describe its options with values JSON has no type for (shown as text)."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(values, default=str)))
    return struct


def _set_time(message: object, field: str, moment: datetime | None) -> None:
    if moment is not None:
        getattr(message, field).CopyFrom(to_timestamp(moment))


def _schedule(message: pb.RetrySchedule) -> list[timedelta]:
    return [from_duration(d, f"retry_schedule[{i}]") for i, d in enumerate(message.delays)]


def required_since(request: pb.RecoverSubscriptionRequest | pb.ReplayRequest) -> datetime:
    if not request.HasField("since"):
        raise InvalidArgumentError.for_field("since", "is required")
    return from_timestamp(request.since)


def create_input(request: pb.CreateSubscriptionRequest) -> SubscriptionInput:
    return SubscriptionInput(
        kind=request.kind or "webhook",
        patterns=list(request.patterns) or None,
        filter=request.filter or None,
        options=struct_to_dict(request.options) if request.HasField("options") else None,
        retry_schedule=_schedule(request.retry_schedule) if request.HasField("retry_schedule") else None,
        rate_limit=request.rate_limit,
        max_concurrency=request.max_concurrency,
        max_pending_age=(
            from_duration(request.max_pending_age, "max_pending_age") if request.HasField("max_pending_age") else None
        ),
        ordering=request.ordering or None,
        paused=request.paused,
    )


def update_input(request: pb.UpdateSubscriptionRequest) -> SubscriptionInput:
    """Only what the request sets: proto3 `optional` and message fields tell "not given" from a zero value."""
    has = request.HasField
    return SubscriptionInput(
        patterns=list(request.patterns) or None,
        filter=request.filter if has("filter") else None,
        options=struct_to_dict(request.options) if has("options") else None,
        retry_schedule=_schedule(request.retry_schedule) if has("retry_schedule") else None,
        rate_limit=request.rate_limit if has("rate_limit") else None,
        max_concurrency=request.max_concurrency if has("max_concurrency") else None,
        max_pending_age=from_duration(request.max_pending_age, "max_pending_age") if has("max_pending_age") else None,
        ordering=request.ordering if has("ordering") else None,
    )


def event_ref(request: pb.ListDeliveriesRequest | pb.ExplainDeliveryRequest) -> EventRef | None:
    which = request.WhichOneof("event")
    if which == "event_id":
        return EventRef(event_id=request.event_id)
    if which == "source_id":
        return EventRef(source=request.source_id.source, id=request.source_id.id)
    return None


def subscription_to_proto(info: SubscriptionInfo, now: datetime) -> pb.Subscription:
    subscription, stats, health = info.subscription, info.stats, info.subscription.health
    message = pb.Subscription(
        id=subscription.id,
        kind=subscription.kind,
        patterns=list(subscription.patterns),
        filter=subscription.filter_json or "",
        options=dict_to_struct(info.options),
        state=subscription.state,
        state_reason=subscription.state_reason or "",
        retry_schedule=[to_duration(d) for d in subscription.retry_schedule],
        rate_limit=subscription.rate_limit or 0.0,
        max_concurrency=subscription.max_concurrency or 0,
        max_pending_age=to_duration(subscription.max_pending_age),
        ordering=subscription.ordering.value,
        created_at=to_timestamp(subscription.created_at),
        health=pb.SubscriptionHealth(circuit=health.circuit, consecutive_failures=health.consecutive_failures),
        stats=pb.SubscriptionStats(
            pending=stats.pending, leased=stats.leased, succeeded=stats.succeeded, dead=stats.dead
        ),
        revealed={key: str(value) for key, value in info.revealed.items()},
    )
    _set_time(message, "updated_at", subscription.updated_at)
    _set_time(message.health, "failing_since", health.failing_since)
    _set_time(message.health, "circuit_opened_at", health.circuit_opened_at)
    _set_time(message.health, "next_probe_at", health.next_probe_at)
    if stats.oldest_pending_at is not None:
        message.stats.oldest_pending_age.CopyFrom(to_duration(max(now - stats.oldest_pending_at, timedelta(0))))
    return message


def attempt_to_proto(attempt: Attempt) -> pb.Attempt:
    message = pb.Attempt(
        id=attempt.attempt_id,
        number=attempt.number,
        started_at=to_timestamp(attempt.started_at),
        duration=to_duration(attempt.duration),
        error_class=attempt.error_class or "",
        error=attempt.error or "",
        response_headers=[pb.Header(name=name, value=value) for name, value in attempt.response_headers],
        response_body=attempt.response_body,
        outcome=attempt.outcome,
        probe=attempt.probe,
        manual=attempt.manual,
    )
    if attempt.status_code is not None:
        message.status_code = attempt.status_code
    _set_time(message, "next_attempt_at", attempt.next_attempt_at)
    return message


def delivery_to_proto(record: DeliveryRecord, attempts: list[Attempt] | None = None) -> pb.DeliveryRecord:
    message = pb.DeliveryRecord(
        id=record.delivery_id,
        subscription_id=record.subscription_id,
        event_id=record.event_id,
        event_seq=record.event_seq,
        state=record.state,
        attempt_count=record.attempts,
        created_at=to_timestamp(record.created_at),
        dead_reason=record.dead_reason or "",
        last_error=record.last_error or "",
        ordering_key=record.ordering_key or "",
        manual=record.manual,
        attempts=[attempt_to_proto(a) for a in attempts or ()],
    )
    for field in ("next_attempt_at", "first_attempt_at", "last_attempt_at", "finished_at"):
        _set_time(message, field, getattr(record, field))
    return message


def explanation_to_proto(explanation: Explanation) -> pb.Explanation:
    message = pb.Explanation(
        subscription_id=explanation.subscription_id,
        event_id=explanation.event_id,
        verdict=explanation.verdict,
        reasons=explanation.reasons,
    )
    if explanation.delivery is not None:
        message.delivery.CopyFrom(delivery_to_proto(explanation.delivery, explanation.attempts))
    return message


def create_source_input(request: pb.CreateSourceRequest) -> SourceInput:
    return SourceInput(
        name=request.name,
        connector=request.connector,
        secrets=list(request.secrets) or None,
        options=struct_to_dict(request.options) if request.HasField("options") else None,
        enabled=request.enabled if request.HasField("enabled") else None,
        rate_limit=request.rate_limit or None,
    )


def update_source_input(request: pb.UpdateSourceRequest) -> SourceInput:
    """Only what the request sets: `secrets` is wrapped, so an empty list (none) differs from unset (unchanged)."""
    has = request.HasField
    return SourceInput(
        secrets=list(request.secrets.secrets) if has("secrets") else None,
        options=struct_to_dict(request.options) if has("options") else None,
        enabled=request.enabled if has("enabled") else None,
        rate_limit=request.rate_limit if has("rate_limit") else None,
    )


def source_to_proto(info: SourceInfo, now: datetime) -> pb.Source:
    """Never a secret: how many verify now, when a rotated-out one stops, and `revealed` (create, rotate) only."""
    source = info.source
    message = pb.Source(
        id=source.id,
        name=source.name,
        connector=source.connector,
        path=info.path,
        options=dict_to_struct(source.options),
        enabled=source.enabled,
        rate_limit=source.rate_limit or 0.0,
        created_at=to_timestamp(source.created_at),
        updated_at=to_timestamp(source.updated_at),
        secrets_count=len(source.active_secrets(now)),
        revealed_secrets=list(info.revealed),
    )
    in_grace = [s.expires_at for s in source.secrets if s.expires_at is not None and s.expires_at > now]
    _set_time(message, "previous_secret_expires_at", max(in_grace, default=None))
    return message
