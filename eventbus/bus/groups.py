"""Consumer groups: gRPC subscriptions that streams join and share (DESIGN.md §3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import structlog

from eventbus.bus.service import GROUP_KIND, Bus
from eventbus.bus.session import GroupSession
from eventbus.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from eventbus.filters import ContentFilter
from eventbus.ids import is_id
from eventbus.patterns import PatternSet
from eventbus.store.base import StartPosition, Subscription, SubscriptionSpec, SubscriptionStats

log = structlog.get_logger("eventbus.groups")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A stream's first message. An empty `group` means an ephemeral group of its own."""

    group: str = ""
    patterns: tuple[str, ...] = ()
    filter: str | None = None
    start: StartPosition = StartPosition()
    max_in_flight: int = 0
    ack_deadline: timedelta | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    subscription: Subscription
    stats: SubscriptionStats
    active_streams: int

    @property
    def name(self) -> str:
        return group_name(self.subscription)


def group_name(subscription: Subscription) -> str:
    """Durable groups go by their name; an ephemeral one by its subscription id."""
    return subscription.name or subscription.id


class ConsumerGroups:
    """Join, inspect, seek and delete consumer groups."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def join(self, request: JoinRequest) -> GroupSession:
        settings = self.bus.settings
        if request.group and not _GROUP_NAME.match(request.group):
            raise InvalidArgumentError.for_field(
                "join.group", "1-128 characters of [A-Za-z0-9._:-], starting with a letter or digit"
            )
        patterns = PatternSet.parse(list(request.patterns), field="join.patterns")
        content_filter = ContentFilter.parse(request.filter, field="join.filter")
        max_in_flight = request.max_in_flight or settings.default_max_in_flight
        if not 1 <= max_in_flight <= settings.max_in_flight_limit:
            raise InvalidArgumentError.for_field(
                "join.max_in_flight", f"must be between 1 and {settings.max_in_flight_limit}"
            )
        ack_deadline = request.ack_deadline or settings.default_ack_deadline
        if not timedelta(milliseconds=100) <= ack_deadline <= settings.max_ack_deadline:
            raise InvalidArgumentError.for_field(
                "join.ack_deadline", f"must be between 100 ms and {settings.max_ack_deadline}"
            )
        if request.start.edge == "seq" and (request.start.seq is None or request.start.seq < 1):
            raise InvalidArgumentError.for_field("join.start.seq", "sequence numbers start at 1")
        spec = SubscriptionSpec(
            kind=GROUP_KIND,
            name=request.group or None,
            patterns=tuple(sorted(patterns.texts)),
            filter_json=content_filter.source_json if content_filter else None,
            retry_schedule=settings.retry_schedule,
            ephemeral=not request.group,
        )
        subscription, created = await self.bus.store.create_subscription(
            spec, start=request.start, now=self.bus.clock.now()
        )
        if not created and (subscription.patterns, subscription.filter_json) != (spec.patterns, spec.filter_json):
            raise FailedPreconditionError(
                f"group {request.group!r} exists with patterns {list(subscription.patterns)} and filter "
                f"{subscription.filter_json or 'none'}; this join asks for {list(spec.patterns)} and filter "
                f"{spec.filter_json or 'none'} (delete the group or use another name)"
            )
        if subscription.backfilling:
            self.bus.kick_backfills()
        log.info(
            "group_joined",
            group=group_name(subscription),
            subscription_id=subscription.id,
            created=created,
            ephemeral=subscription.ephemeral,
        )
        return GroupSession(
            self.bus, subscription, created=created, max_in_flight=max_in_flight, ack_deadline=ack_deadline
        )

    async def find(self, name: str) -> Subscription:
        found = None
        if is_id(name, "sub"):
            found = await self.bus.store.get_subscription(name)
            if found is not None and found.kind != GROUP_KIND:
                found = None
        if found is None and _GROUP_NAME.match(name):
            found = await self.bus.store.find_subscription(GROUP_KIND, name)
        if found is None:
            raise NotFoundError(f"group {name!r} does not exist")
        return found

    async def info(self, subscription: Subscription) -> GroupInfo:
        stats = await self.bus.store.subscription_stats(subscription.id)
        return GroupInfo(subscription, stats, self.bus.active_streams.get(subscription.id, 0))

    async def get(self, name: str) -> GroupInfo:
        return await self.info(await self.find(name))

    async def list(self, *, page_size: int = 100, page_token: str = "") -> tuple[list[GroupInfo], str]:
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        size = page_size or 100
        if page_token and not is_id(page_token, "sub"):
            raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
        subscriptions = await self.bus.store.list_subscriptions(GROUP_KIND, after_id=page_token, limit=size + 1)
        more = len(subscriptions) > size
        page = subscriptions[:size]
        infos = [await self.info(s) for s in page]
        return infos, (page[-1].id if more else "")

    async def seek(self, name: str, start: StartPosition) -> GroupInfo:
        subscription = await self.find(name)
        if start.edge == "seq" and (start.seq is None or start.seq < 1):
            raise InvalidArgumentError.for_field("seq", "sequence numbers start at 1")
        await self.bus.store.seek_subscription(subscription.id, start=start, now=self.bus.clock.now())
        self.bus.kick_backfills()
        log.info("group_seeked", group=name, edge=start.edge, seq=start.seq, time=start.time)
        return await self.info(subscription)

    async def delete(self, name: str) -> None:
        subscription = await self.find(name)
        await self.bus.store.delete_subscription(subscription.id, now=self.bus.clock.now())
        for session in list(self.bus.sessions):
            if session.subscription.id == subscription.id:
                session.end(NotFoundError(f"group {name!r} was deleted"))
        log.info("group_deleted", group=name, subscription_id=subscription.id)
