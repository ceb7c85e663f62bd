"""Deliveries as operators see them: list, show with attempts, resend, and why an event was (not) delivered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from eventbus.bus.service import Bus
from eventbus.errors import InvalidArgumentError, NotFoundError
from eventbus.filters import ContentFilter
from eventbus.ids import is_id
from eventbus.model import StoredEvent, filter_document, format_rfc3339
from eventbus.patterns import PatternSet, is_system_type
from eventbus.store.base import Subscription
from eventbus.store.records import Attempt, DeliveryQuery, DeliveryRecord

log = structlog.get_logger("eventbus.deliveries")
STATES = ("pending", "leased", "succeeded", "dead")


@dataclass(frozen=True, slots=True)
class EventRef:
    """An event named by its `evt_` id, or by its CloudEvents (source, id)."""

    event_id: str = ""
    source: str = ""
    id: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an event was, or was not (yet), delivered to a subscription. `verdict` is one word; `reasons` say why."""

    subscription_id: str
    event_id: str
    verdict: str  # not_matched | filtered | not_created | held | pending | in_flight | succeeded | dead
    reasons: list[str]
    delivery: DeliveryRecord | None = None
    attempts: list[Attempt] = field(default_factory=list)


def _moment(value: datetime) -> str:
    return format_rfc3339(value)


def failing_clause(filter_json: str, document: dict[str, object]) -> str | None:
    """The first top-level clause of a filter that the event does not satisfy, as JSON."""
    for key, value in json.loads(filter_json).items():
        clause = ContentFilter.parse({key: value})
        if clause is not None and not clause.matches(document):
            return json.dumps({key: value}, separators=(",", ":"))
    return None


class Deliveries:
    """The service layer for deliveries of every kind."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def event(self, ref: EventRef) -> StoredEvent:
        return await self.bus.get_event(event_id=ref.event_id or None, source=ref.source or None, id=ref.id or None)

    async def list_page(
        self,
        *,
        subscription_id: str = "",
        event: EventRef | None = None,
        state: str = "",
        page_size: int = 100,
        page_token: str = "",
        newest_first: bool = False,
    ) -> tuple[list[DeliveryRecord], str]:
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        if page_token and not is_id(page_token, "dlv"):
            raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
        if state and state not in STATES:
            raise InvalidArgumentError.for_field("state", f"{state!r}; use one of {', '.join(STATES)}")
        seq = (await self.event(event)).seq if event is not None else None
        size = page_size or 100
        found = await self.bus.store.list_deliveries(
            DeliveryQuery(
                subscription_id=subscription_id or None,
                event_seq=seq,
                state=state or None,
                after_id=page_token,
                limit=size + 1,
                newest_first=newest_first,
            )
        )
        page = found[:size]
        return page, (page[-1].delivery_id if len(found) > size else "")

    async def get(self, delivery_id: str) -> tuple[DeliveryRecord, list[Attempt]]:
        record = await self.bus.store.get_delivery(delivery_id) if is_id(delivery_id, "dlv") else None
        if record is None:
            raise NotFoundError(f"delivery {delivery_id!r} does not exist")
        return record, await self.bus.store.list_attempts(delivery_id)

    async def resend(self, delivery_id: str) -> DeliveryRecord:
        """A new attempt now, outside the schedule (the same `webhook-id`: receivers dedupe on it)."""
        if not is_id(delivery_id, "dlv"):
            raise NotFoundError(f"delivery {delivery_id!r} does not exist")
        record = await self.bus.store.resend_delivery(delivery_id, now=self.bus.clock.now())
        log.info("delivery_resent", delivery_id=delivery_id, subscription_id=record.subscription_id)
        return record

    async def why(self, subscription_id: str, ref: EventRef) -> Explanation:
        subscription = await self.bus.store.get_subscription(subscription_id) if is_id(subscription_id, "sub") else None
        if subscription is None:
            raise NotFoundError(f"subscription {subscription_id!r} does not exist")
        stored = await self.event(ref)
        found = await self.bus.store.list_deliveries(
            DeliveryQuery(subscription_id=subscription.id, event_seq=stored.seq, limit=100)
        )
        if not found:
            verdict, reasons = self._never_created(subscription, stored)
            return Explanation(subscription.id, stored.event_id, verdict, reasons)
        delivery = found[-1]
        attempts = await self.bus.store.list_attempts(delivery.delivery_id)
        verdict, reasons = await self._delivery_state(subscription, delivery)
        if len(found) > 1:
            reasons.append(f"{len(found)} deliveries of this event exist (replays); this is the latest")
        return Explanation(subscription.id, stored.event_id, verdict, reasons, delivery, attempts)

    def _never_created(self, subscription: Subscription, stored: StoredEvent) -> tuple[str, list[str]]:
        event = stored.event
        if is_system_type(event.type) and event.subject == subscription.id:
            return "not_matched", ["a subscription never receives system events about itself"]
        if not PatternSet.parse(list(subscription.patterns)).matches(event.type):
            return "not_matched", [f"type {event.type!r} matches none of the patterns {list(subscription.patterns)}"]
        if subscription.filter_json:
            clause = failing_clause(subscription.filter_json, filter_document(event))
            if clause is not None:
                return "filtered", [f"the content filter is false for this event: clause {clause} does not hold"]
        if subscription.created_at > stored.received_at:
            return "not_created", [
                f"the subscription was created at {_moment(subscription.created_at)}, after the event was received "
                f"({_moment(stored.received_at)}); replay it to deliver older events"
            ]
        if subscription.state == "disabled":
            return "not_created", [
                f"the subscription is disabled ({subscription.state_reason or 'no reason given'}): no deliveries are "
                "created while it is; replay the event after enabling it"
            ]
        return "not_created", [
            "no delivery exists: the subscription was disabled when the event arrived, or the delivery was removed "
            "by retention"
        ]

    async def _delivery_state(self, subscription: Subscription, delivery: DeliveryRecord) -> tuple[str, list[str]]:
        attempts = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
        if delivery.state == "succeeded":
            assert delivery.finished_at is not None
            return "succeeded", [f"delivered at {_moment(delivery.finished_at)} after {attempts}"]
        if delivery.state == "dead":
            last = f"; last error: {delivery.last_error}" if delivery.last_error else ""
            return "dead", [f"dead ({delivery.dead_reason}) after {attempts}{last}; resend or recover it"]
        if delivery.state == "leased":
            return "in_flight", [f"attempt {delivery.attempts} is in flight now"]
        reasons = []
        if subscription.state == "paused":
            reasons.append("held: the subscription is paused; resume it to release its deliveries")
        elif subscription.state == "disabled":
            reasons.append(f"held: the subscription is disabled ({subscription.state_reason or 'no reason given'})")
        health = subscription.health
        if health.circuit == "open":
            probe = f"; next probe at {_moment(health.next_probe_at)}" if health.next_probe_at else ""
            opened = _moment(health.circuit_opened_at) if health.circuit_opened_at else "?"
            reasons.append(
                f"held: the circuit is open since {opened} after {health.consecutive_failures} failures in a row{probe}"
            )
        blocker = await self.bus.store.ordering_blocker(delivery)
        if blocker is not None:
            reasons.append(
                f"held: delivery {blocker.delivery_id} of the same subject (seq {blocker.event_seq}) goes first "
                f"(ordering by subject); it is {blocker.state}"
            )
        if reasons:
            return "held", reasons
        assert delivery.next_attempt_at is not None
        retry = f" (after {attempts}; last error: {delivery.last_error})" if delivery.attempts else ""
        return "pending", [
            f"pending: attempt {delivery.attempts + 1} of {subscription.max_attempts} is due at "
            f"{_moment(delivery.next_attempt_at)}{retry}"
        ]
