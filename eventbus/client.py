"""The async Python client: publish, subscribe with acks, read events; manage groups, subscriptions, deliveries.

    async with EventBusClient("127.0.0.1:50051", api_key=key) as bus:
        await bus.publish([Event.create(type="order.paid", source="/shop", data={"total": 10})])
        async for delivery in bus.subscribe("billing", ["order.*"]):
            ...
            await delivery.ack()

Users get `eventbus.model` values and plain dataclasses; protobuf stays inside. Dropped streams reconnect and
rejoin by themselves.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import grpc
import structlog

from eventbus.client_admin import SubscriptionCalls
from eventbus.client_keys import KeyCalls, KeyStatus, NewKey
from eventbus.client_sources import SourceCalls, SourceStatus
from eventbus.client_types import EventTypeStatus, TypeCalls
from eventbus.client_values import (
    AttemptStatus,
    DeliveryCounts,
    DeliveryExplanation,
    DeliveryStatus,
    HealthStatus,
    RawRequestStatus,
    SubscriptionStatus,
    raw_request_from_proto,
)
from eventbus.errors import InvalidArgumentError, UnavailableError
from eventbus.grpc.convert import (
    event_to_proto,
    from_timestamp,
    stored_event_from_proto,
    to_duration,
    to_timestamp,
)
from eventbus.grpc.errors import error_from_rpc
from eventbus.model import Event, PublishResult, StoredEvent
from eventbus.subscription import Delivery, Subscription
from eventbus.tls import ClientTls
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2, eventbus_pb2_grpc

log = structlog.get_logger("eventbus.client")
_MAX_MESSAGE = 16 * 1024 * 1024
Start = str | int | datetime


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group and its backlog, as `groups show` prints it."""

    name: str
    subscription_id: str
    patterns: tuple[str, ...]
    filter: str | None
    ephemeral: bool
    created_at: datetime
    last_active_at: datetime
    lag: int
    pending: int
    leased: int
    succeeded: int
    dead: int
    oldest_pending_age: timedelta | None
    active_streams: int


def _group_status(group: admin_pb2.Group) -> GroupStatus:
    return GroupStatus(
        name=group.name,
        subscription_id=group.subscription_id,
        patterns=tuple(group.patterns),
        filter=group.filter or None,
        ephemeral=group.ephemeral,
        created_at=from_timestamp(group.created_at),
        last_active_at=from_timestamp(group.last_active_at),
        lag=group.lag,
        pending=group.pending,
        leased=group.leased,
        succeeded=group.succeeded,
        dead=group.dead,
        oldest_pending_age=group.oldest_pending_age.ToTimedelta() if group.HasField("oldest_pending_age") else None,
        active_streams=group.active_streams,
    )


def _event_request(event_id: str | None, source: str | None, id: str | None) -> eventbus_pb2.GetEventRequest:
    if event_id:
        return eventbus_pb2.GetEventRequest(event_id=event_id)
    return eventbus_pb2.GetEventRequest(source_id=eventbus_pb2.EventRef(source=source or "", id=id or ""))


class EventBusClient(SubscriptionCalls, KeyCalls, SourceCalls, TypeCalls):
    """A connection to one eventbus server. Use as an async context manager.

    The subscription and delivery calls (`create_subscription`, `list_deliveries`, `explain`, ...) come from
    `eventbus.client_admin.SubscriptionCalls`; the key calls (`create_key`, `list_keys`, `revoke_key`) from
    `eventbus.client_keys.KeyCalls`; the source calls (`create_source`, `list_sources`, `rotate_source_secret`, ...)
    from `eventbus.client_sources.SourceCalls`; the event-type calls (`list_event_types`, `set_event_schema`, ...) and
    `send_test_event` from `eventbus.client_types.TypeCalls`.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        publish_retries: int = 5,
        tls: ClientTls | None = None,
    ) -> None:
        self.address = address
        # None: plaintext, as a server without --tls-cert speaks; `ClientTls.from_files(ca=..., cert=..., key=...)`
        # for one with TLS or mutual TLS (docs/tls.md).
        self.tls = tls
        self.timeout = timeout
        self.publish_retries = publish_retries
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channel: grpc.aio.Channel | None = None
        self._bus: eventbus_pb2_grpc.EventBusStub | None = None
        self._admin: admin_pb2_grpc.AdminStub | None = None

    async def __aenter__(self) -> EventBusClient:
        self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def connect(self) -> None:
        if self._channel is None:
            options = [
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self.tls is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=options)
            else:
                self._channel = grpc.aio.secure_channel(self.address, self.tls.channel_credentials(), options=options)
            self._bus = eventbus_pb2_grpc.EventBusStub(self._channel)
            self._admin = admin_pb2_grpc.AdminStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._bus = self._admin = None

    @property
    def stub(self) -> eventbus_pb2_grpc.EventBusStub:
        if self._bus is None:
            raise UnavailableError("the client is not connected: use `async with EventBusClient(...)`")
        return self._bus

    @property
    def admin(self) -> admin_pb2_grpc.AdminStub:
        if self._admin is None:
            raise UnavailableError("the client is not connected: use `async with EventBusClient(...)`")
        return self._admin

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    # -- events --------------------------------------------------------------------------------------------

    async def publish(
        self, events: Event | Sequence[Event], *, not_before: datetime | None = None
    ) -> list[PublishResult]:
        """Publish 1..1000 events atomically. Retried while the server is unavailable: (source, id) dedup makes
        a repeated publish safe, and it answers with the original ids."""
        batch = [events] if isinstance(events, Event) else list(events)
        request = eventbus_pb2.PublishRequest(events=[event_to_proto(e) for e in batch])
        if not_before is not None:
            request.not_before.CopyFrom(to_timestamp(not_before))
        delay = 0.1
        for attempt in range(self.publish_retries + 1):
            try:
                response = await self._call(self.stub.Publish, request)
                break
            except UnavailableError:
                if attempt == self.publish_retries:
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        return [
            PublishResult(id=r.id, source=r.source, event_id=r.event_id, seq=r.seq, duplicate=r.duplicate)
            for r in response.results
        ]

    async def get_event(
        self, event_id: str | None = None, *, source: str | None = None, id: str | None = None
    ) -> StoredEvent:
        return stored_event_from_proto(await self._call(self.stub.GetEvent, _event_request(event_id, source, id)))

    async def get_event_detail(
        self, event_id: str | None = None, *, source: str | None = None, id: str | None = None
    ) -> tuple[StoredEvent, RawRequestStatus | None]:
        """The event and the raw `/hooks` request it came from (None: it did not come through `/hooks`, or the
        request was pruned). `Admin.GetEvent`: needs the `admin` scope, where `get_event` needs `subscribe`."""
        detail = await self._call(self.admin.GetEvent, _event_request(event_id, source, id))
        raw = raw_request_from_proto(detail.raw_request) if detail.HasField("raw_request") else None
        return stored_event_from_proto(detail.event), raw

    async def list_events(
        self,
        *,
        patterns: Sequence[str] = (),
        source: str | None = None,
        subject: str | None = None,
        received_after: datetime | None = None,
        received_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[StoredEvent], str]:
        """One page in seq order and the next page's token ("" on the last page)."""
        request = eventbus_pb2.ListEventsRequest(
            page_size=page_size,
            page_token=page_token,
            patterns=list(patterns),
            source=source or "",
            subject=subject or "",
        )
        if received_after is not None:
            request.received_after.CopyFrom(to_timestamp(received_after))
        if received_before is not None:
            request.received_before.CopyFrom(to_timestamp(received_before))
        response = await self._call(self.stub.ListEvents, request)
        return [stored_event_from_proto(e) for e in response.events], response.next_page_token

    # -- subscribe -----------------------------------------------------------------------------------------

    def subscribe(
        self,
        group: str | None = None,
        patterns: Sequence[str] = (),
        *,
        filter: str | None = None,
        start: Start = "latest",
        max_in_flight: int = 0,
        ack_deadline: timedelta | None = None,
        reconnect: bool = True,
    ) -> Subscription:
        """Join `group` (None: an ephemeral group of this stream's own) and iterate over its deliveries."""
        join = eventbus_pb2.Join(
            group=group or "", patterns=list(patterns), filter=filter or "", max_in_flight=max_in_flight
        )
        if isinstance(start, datetime):
            join.start.time.CopyFrom(to_timestamp(start))
        elif isinstance(start, int):
            join.start.seq = start
        elif start == "earliest":
            join.start.edge = eventbus_pb2.StartPosition.EARLIEST
        elif start == "latest":
            join.start.edge = eventbus_pb2.StartPosition.LATEST
        else:
            raise InvalidArgumentError.for_field("start", f"{start!r}: use latest, earliest, a seq or a datetime")
        if ack_deadline is not None:
            join.ack_deadline.CopyFrom(to_duration(ack_deadline))
        return Subscription(self, join, reconnect=reconnect)

    # -- groups --------------------------------------------------------------------------------------------

    async def list_groups(self, *, page_size: int = 0, page_token: str = "") -> tuple[list[GroupStatus], str]:
        response = await self._call(
            self.admin.ListGroups, admin_pb2.ListGroupsRequest(page_size=page_size, page_token=page_token)
        )
        return [_group_status(g) for g in response.groups], response.next_page_token

    async def get_group(self, name: str) -> GroupStatus:
        return _group_status(await self._call(self.admin.GetGroup, admin_pb2.GetGroupRequest(name=name)))

    async def seek_group(self, name: str, to: int | datetime) -> GroupStatus:
        request = admin_pb2.SeekGroupRequest(name=name)
        if isinstance(to, datetime):
            request.time.CopyFrom(to_timestamp(to))
        else:
            request.seq = to
        return _group_status(await self._call(self.admin.SeekGroup, request))

    async def delete_group(self, name: str) -> None:
        await self._call(self.admin.DeleteGroup, admin_pb2.DeleteGroupRequest(name=name))


__all__ = [
    "AttemptStatus",
    "ClientTls",
    "Delivery",
    "DeliveryCounts",
    "DeliveryExplanation",
    "DeliveryStatus",
    "EventBusClient",
    "EventTypeStatus",
    "GroupStatus",
    "HealthStatus",
    "KeyStatus",
    "NewKey",
    "RawRequestStatus",
    "SourceStatus",
    "Subscription",
    "SubscriptionStatus",
]
