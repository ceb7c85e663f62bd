"""Subscriptions of every push kind (endpoints included): create, change, pause, resume, rotate, recover, replay.

The one place these rules live: gRPC `Admin` and the REST API both call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from eventbus.bus.health import system_events
from eventbus.bus.kinds import KindRegistry
from eventbus.bus.service import GROUP_KIND, Bus
from eventbus.bus.webhooks import WebhookKind
from eventbus.errors import (
    ConcurrentUpdateError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from eventbus.filters import ContentFilter
from eventbus.ids import is_id
from eventbus.model import Event
from eventbus.patterns import PatternSet, validate_type
from eventbus.store.base import (
    Ordering,
    StartPosition,
    Subscription,
    SubscriptionSpec,
    SubscriptionState,
    SubscriptionStats,
)
from eventbus.store.managed import refuse_if_managed
from eventbus.store.records import DeliveryQuery, DeliveryRecord, HealthChange, HealthChangeKind

log = structlog.get_logger("eventbus.subscriptions")
MAX_RECOVER = 100_000
RECOVER_CHUNK = 5_000
MAX_SCHEDULE = 30
MAX_CONCURRENCY = 100
CONFLICT_RETRIES = 5
TEST_TYPE = "eventbus.test"
TEST_SOURCE = "/eventbus/test"
_UNSET = object()


@dataclass(frozen=True, slots=True)
class SubscriptionInput:
    """A new subscription, or (for `update`) the settings to change: None leaves a setting as it is."""

    kind: str = "webhook"
    patterns: Sequence[str] | None = None
    filter: str | None = None  # "" or "{}" removes the filter on update
    options: Mapping[str, object] | None = None
    retry_schedule: Sequence[timedelta] | None = None
    rate_limit: float | None = None  # 0 removes the limit on update
    max_concurrency: int | None = None
    max_pending_age: timedelta | None = None
    ordering: str | None = None
    paused: bool = False
    name: str | None = None  # set only by the config file: its declared name (the API creates unnamed ones)


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A subscription as shown: its public options, counts, and (once, on create or rotate) its new credentials."""

    subscription: Subscription
    options: dict[str, object]
    stats: SubscriptionStats
    revealed: dict[str, object] = field(default_factory=dict)


def _check_schedule(schedule: Sequence[timedelta]) -> tuple[timedelta, ...]:
    if len(schedule) > MAX_SCHEDULE:
        raise InvalidArgumentError.for_field("retry_schedule", f"{len(schedule)} delays; at most {MAX_SCHEDULE}")
    for index, delay in enumerate(schedule):
        if not timedelta(seconds=1) <= delay <= timedelta(days=7):
            raise InvalidArgumentError.for_field(f"retry_schedule[{index}]", "each delay between 1 s and 7 days")
    return tuple(schedule)


def _check_limits(spec: SubscriptionInput) -> None:
    if spec.rate_limit is not None and not 0 <= spec.rate_limit <= 10_000:
        raise InvalidArgumentError.for_field("rate_limit", "deliveries per second, up to 10000 (0: no limit)")
    # A subscription may hold at most a tenth of the process's sends in flight (1024): a few hanging destinations
    # cannot take every slot from the others.
    if spec.max_concurrency is not None and not 0 <= spec.max_concurrency <= MAX_CONCURRENCY:
        raise InvalidArgumentError.for_field(
            "max_concurrency", f"between 1 and {MAX_CONCURRENCY} (0: the kind's default)"
        )
    if spec.max_pending_age is not None and not timedelta(minutes=1) <= spec.max_pending_age <= timedelta(days=30):
        raise InvalidArgumentError.for_field("max_pending_age", "between 1 minute and 30 days")


def _check_ordering(value: str) -> Ordering:
    try:
        return Ordering(value)
    except ValueError:
        raise InvalidArgumentError.for_field("ordering", f"{value!r}; use none or subject") from None


class Subscriptions:
    """The service layer for push subscriptions (webhook endpoints and plugin destinations)."""

    def __init__(self, bus: Bus, kinds: KindRegistry) -> None:
        self.bus = bus
        self.kinds = kinds

    async def find(self, subscription_id: str) -> Subscription:
        found = await self.bus.store.get_subscription(subscription_id) if is_id(subscription_id, "sub") else None
        if found is None or found.kind == GROUP_KIND:
            raise NotFoundError(f"subscription {subscription_id!r} does not exist")
        return found

    async def info(self, subscription: Subscription, revealed: dict[str, object] | None = None) -> SubscriptionInfo:
        kind = self.kinds.find(subscription.kind)
        options = kind.describe(subscription) if kind is not None else dict(subscription.options)
        stats = await self.bus.store.subscription_stats(subscription.id)
        return SubscriptionInfo(subscription, options, stats, revealed or {})

    async def create(self, spec: SubscriptionInput) -> SubscriptionInfo:
        if spec.kind == GROUP_KIND:
            raise InvalidArgumentError.for_field("kind", "gRPC consumer groups are created by joining them (Subscribe)")
        kind = self.kinds.get(spec.kind)
        patterns = PatternSet.parse(list(spec.patterns or ["**"]), field="patterns")
        content_filter = ContentFilter.parse(spec.filter, field="filter")
        _check_limits(spec)
        now = self.bus.clock.now()
        prepared = await kind.prepare(dict(spec.options or {}), existing=None, now=now)
        subscription, _ = await self.bus.store.create_subscription(
            SubscriptionSpec(
                kind=kind.name,
                name=spec.name,
                patterns=tuple(sorted(patterns.texts)),
                filter_json=content_filter.source_json if content_filter else None,
                retry_schedule=_check_schedule(spec.retry_schedule)
                if spec.retry_schedule is not None
                else self.bus.settings.retry_schedule,
                max_pending_age=spec.max_pending_age or self.bus.settings.max_pending_age,
                options=prepared.options,
                rate_limit=spec.rate_limit or None,
                max_concurrency=spec.max_concurrency or None,
                ordering=_check_ordering(spec.ordering or "none"),
                secrets=prepared.secrets,
                state=SubscriptionState.PAUSED if spec.paused else SubscriptionState.ACTIVE,
            ),
            start=StartPosition(),
            now=now,
        )
        log.info("subscription_created", subscription_id=subscription.id, kind=kind.name, patterns=patterns.texts)
        return await self.info(subscription, prepared.revealed)

    async def get(self, subscription_id: str) -> SubscriptionInfo:
        return await self.info(await self.find(subscription_id))

    async def list_page(
        self, *, kind: str | None = None, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[SubscriptionInfo], str]:
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        if page_token and not is_id(page_token, "sub"):
            raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
        if kind == GROUP_KIND:
            raise InvalidArgumentError.for_field("kind", "consumer groups are listed with ListGroups")
        size = page_size or 100
        found = await self.bus.store.list_subscriptions(kind, after_id=page_token, limit=size + 1)
        page = found[:size]
        return [await self.info(s) for s in page], (page[-1].id if len(found) > size else "")

    async def update(
        self, subscription_id: str, spec: SubscriptionInput, *, declared: bool = False
    ) -> SubscriptionInfo:
        """Change the settings given; credentials and options are merged over the current ones, atomically.

        What the config file manages changes only through the file (`declared`, from `configuration.declared`)."""
        if not declared:
            await refuse_if_managed(self.bus.store, subscription_id, "change")
        for _ in range(CONFLICT_RETRIES - 1):
            try:
                return await self._update(subscription_id, spec)
            except ConcurrentUpdateError:
                continue  # someone changed it between our read and write: merge over their change instead
        return await self._update(subscription_id, spec)

    async def _update(self, subscription_id: str, spec: SubscriptionInput) -> SubscriptionInfo:
        subscription = await self.find(subscription_id)
        kind = self.kinds.get(subscription.kind)
        _check_limits(spec)
        changes: dict[str, object] = {}
        revealed: dict[str, object] = {}
        if spec.patterns is not None:
            changes["patterns"] = tuple(sorted(PatternSet.parse(list(spec.patterns), field="patterns").texts))
        if spec.filter is not None:
            content_filter = ContentFilter.parse(spec.filter, field="filter")
            changes["filter_json"] = content_filter.source_json if content_filter else None
        if spec.retry_schedule is not None:
            changes["retry_schedule"] = _check_schedule(spec.retry_schedule)
        if spec.rate_limit is not None:
            changes["rate_limit"] = spec.rate_limit or None
        if spec.max_concurrency is not None:
            changes["max_concurrency"] = spec.max_concurrency or None
        if spec.max_pending_age is not None:
            changes["max_pending_age"] = spec.max_pending_age
        if spec.ordering is not None and _check_ordering(spec.ordering) != subscription.ordering:
            raise FailedPreconditionError("ordering cannot change on a live subscription: create a new one")
        if spec.options is not None:
            merged = {**subscription.options, **spec.options}
            prepared = await kind.prepare(merged, existing=subscription, now=self.bus.clock.now())
            changes.update(options=prepared.options, secrets=prepared.secrets)
            revealed = prepared.revealed if "secret" in spec.options or "ed25519" in spec.options else {}
        await self.bus.store.update_subscription(
            subscription.id, changes, now=self.bus.clock.now(), if_updated_at=subscription.updated_at
        )
        log.info("subscription_updated", subscription_id=subscription.id, changed=sorted(changes))
        return await self.info(await self.find(subscription.id), revealed)

    async def delete(self, subscription_id: str, *, declared: bool = False) -> None:
        subscription = await self.find(subscription_id)
        if not declared:
            await refuse_if_managed(self.bus.store, subscription.id, "be deleted")
        await self.bus.store.delete_subscription(subscription.id, now=self.bus.clock.now())
        log.info("subscription_deleted", subscription_id=subscription.id)

    async def set_state(
        self, subscription_id: str, state: SubscriptionState, reason: str | None = None
    ) -> list[HealthChange]:
        subscription = await self.find(subscription_id)
        changes = await self.bus.store.set_subscription_state(
            subscription.id, state, reason=reason, now=self.bus.clock.now(), system_events=system_events
        )
        log.info("subscription_state_set", subscription_id=subscription.id, state=state.value, was=subscription.state)
        return changes

    async def pause(self, subscription_id: str) -> SubscriptionInfo:
        await self.set_state(subscription_id, SubscriptionState.PAUSED, "paused by an operator")
        return await self.get(subscription_id)

    async def resume(self, subscription_id: str) -> SubscriptionInfo:
        """Active again, from paused or disabled: held deliveries are released at once, paced by the limits."""
        await self.set_state(subscription_id, SubscriptionState.ACTIVE)
        return await self.get(subscription_id)

    async def rotate_secret(self, subscription_id: str, new_secret: str | None = None) -> SubscriptionInfo:
        """A new signing secret now; the current one keeps signing for 24 h. Two rotations at once both count."""
        await refuse_if_managed(self.bus.store, subscription_id, "rotate its secret")
        for attempt in range(CONFLICT_RETRIES):
            subscription = await self.find(subscription_id)
            kind = self.kinds.get(subscription.kind)
            if not isinstance(kind, WebhookKind):
                raise FailedPreconditionError(f"a {subscription.kind} subscription has no signing secret to rotate")
            secrets, secret = kind.rotate(subscription, new_secret, now=self.bus.clock.now())
            try:
                await self.bus.store.update_subscription(
                    subscription.id,
                    {"secrets": secrets},
                    now=self.bus.clock.now(),
                    if_updated_at=subscription.updated_at,
                )
                break
            except ConcurrentUpdateError:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
        log.info("subscription_secret_rotated", subscription_id=subscription.id)
        return await self.info(await self.find(subscription.id), {"secret": secret})

    async def recover(self, subscription_id: str, *, since: datetime, include_pending: bool = False) -> int:
        """Re-queue dead deliveries (and pending ones if asked) created since `since`, at most 100 000 per call."""
        subscription = await self.find(subscription_id)
        now = self.bus.clock.now()
        if since > now:
            raise InvalidArgumentError.for_field("since", "is in the future")
        recovered: list[tuple[str, str]] = []
        while len(recovered) < MAX_RECOVER:  # in chunks: publishes share the writer meanwhile
            chunk = await self.bus.store.recover_deliveries(
                subscription.id,
                since=since,
                include_pending=include_pending,
                limit=min(RECOVER_CHUNK, MAX_RECOVER - len(recovered)),
                now=now,
            )
            recovered += chunk
            if len(chunk) < RECOVER_CHUNK:
                break
        if recovered:
            await self._announce_recovery(subscription, [d for d, _ in recovered], since)
        log.info("subscription_recovered", subscription_id=subscription.id, deliveries=len(recovered))
        return len(recovered)

    async def _announce_recovery(self, subscription: Subscription, delivery_ids: list[str], since: datetime) -> None:
        change = HealthChange(
            HealthChangeKind.DELIVERY_RECOVERED,
            subscription.id,
            subscription.kind,
            self.bus.clock.now(),
            {"count": len(delivery_ids), "since": since.isoformat(), "delivery_ids": delivery_ids[:1000]},
        )
        await self.bus.publish(system_events([change]), internal=True)

    async def replay(self, subscription_id: str, *, since: datetime, patterns: Sequence[str] = ()) -> int:
        """Create deliveries for the events received since `since` that match (default: its own patterns)."""
        subscription = await self.find(subscription_id)
        if subscription.state == SubscriptionState.DISABLED:
            raise FailedPreconditionError(
                f"subscription {subscription.id} is disabled: nothing is delivered to it; resume it, then replay"
            )
        if patterns:
            PatternSet.parse(list(patterns), field="patterns")
        upto = await self.bus.store.replay(
            subscription.id, patterns=list(patterns) or None, since=since, now=self.bus.clock.now()
        )
        if upto:
            self.bus.kick_backfills()
        log.info("subscription_replay_started", subscription_id=subscription.id, upto_seq=upto)
        return upto

    async def send_test(self, subscription_id: str, *, type: str | None = None, data: object = None) -> DeliveryRecord:
        """Store one test event and deliver it to this subscription only, at once, on the normal machinery.

        The event: type `eventbus.test` (or `type`, which must be `eventbus.test.<name>`), source `/eventbus/test`,
        subject the subscription's id, data a small sample (or `data`). No other subscription receives it, whatever
        its patterns, and since it is a system type no business pattern (`**`, `order.*`) matches it later either:
        a replay, a backfill or a consumer group joining from the earliest event never gets it, and no business
        type's catalogue sample is replaced by it. Returns the delivery (pending: its attempts follow).
        """
        subscription = await self.find(subscription_id)
        if subscription.state != SubscriptionState.ACTIVE:
            raise FailedPreconditionError(
                f"subscription {subscription.id} is {subscription.state}: resume it to send a test event"
            )
        type_ = type or TEST_TYPE
        validate_type(type_, "type")
        if type_ != TEST_TYPE and not type_.startswith(f"{TEST_TYPE}."):
            raise InvalidArgumentError.for_field(
                "type", f"a test event's type is {TEST_TYPE} or {TEST_TYPE}.<name>, never a business or system type"
            )
        sample = {"message": "a test event from eventbus", "subscription_id": subscription.id}
        event = Event.create(
            type=type_, source=TEST_SOURCE, subject=subscription.id, data=sample if data is None else data
        )
        [outcome] = await self.bus.store.append(
            [event],
            now=self.bus.clock.now(),
            not_before=None,
            dedup_window=self.bus.settings.dedup_window,
            only_subscription=subscription.id,
        )
        found = await self.bus.store.list_deliveries(
            DeliveryQuery(subscription_id=subscription.id, event_seq=outcome.seq, limit=1)
        )
        if not found:
            raise UnavailableError(f"the test delivery of event {outcome.event_id} was not found; retry")
        log.info(
            "subscription_test_sent",
            subscription_id=subscription.id,
            event_id=outcome.event_id,
            delivery_id=found[0].delivery_id,
        )
        return found[0]
