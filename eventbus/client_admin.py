"""The client's Admin calls for subscriptions of the push kinds (webhook endpoints included) and deliveries.

`EventBusClient` inherits `SubscriptionCalls`; the values they return are in `eventbus.client_values`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from google.protobuf import struct_pb2

from eventbus.client_values import (
    DeliveryExplanation,
    DeliveryStatus,
    SubscriptionStatus,
    delivery_from_proto,
    explanation_from_proto,
    subscription_from_proto,
)
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.convert import to_duration, to_timestamp
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import admin_pb2_grpc, eventbus_pb2


def _struct(values: Mapping[str, object], name: str) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    plain: dict[str, Any] = dict(values)
    try:
        struct.update(plain)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError.for_field(name, f"must hold JSON values only ({exc})") from None
    return struct


def _count(value: int | None, name: str) -> int:
    """A count the wire carries unsigned: a negative one is refused here, naming the field as the server would."""
    if value is not None and value < 0:
        raise InvalidArgumentError.for_field(name, "must not be negative")
    return value or 0


def _retry_schedule(delays: Sequence[timedelta]) -> pb.RetrySchedule:
    return pb.RetrySchedule(delays=[to_duration(d) for d in delays])


def _with_event(request: Any, event_id: str | None, source: str | None, id: str | None) -> Any:
    if event_id:
        request.event_id = event_id
    elif source or id:
        request.source_id.CopyFrom(eventbus_pb2.EventRef(source=source or "", id=id or ""))
    return request


class _Connected(Protocol):
    @property
    def admin(self) -> admin_pb2_grpc.AdminStub: ...

    async def _call(self, method: Any, request: Any) -> Any: ...


class SubscriptionCalls:
    """Subscriptions of the push kinds and their deliveries (mixed into `EventBusClient`)."""

    async def create_subscription(
        self: _Connected,
        kind: str = "webhook",
        *,
        patterns: Sequence[str] | None = None,
        filter: str | None = None,
        options: Mapping[str, object] | None = None,
        retry_schedule: Sequence[timedelta] | None = None,
        rate_limit: float | None = None,
        max_concurrency: int | None = None,
        max_pending_age: timedelta | None = None,
        ordering: str | None = None,
        paused: bool = False,
    ) -> SubscriptionStatus:
        """A new subscription; a webhook endpoint takes `options={"url": ..., "secret"?, "headers"?, ...}`.

        The answer's `secret` (and `revealed["public_key"]` with `ed25519`) is shown this once."""
        request = pb.CreateSubscriptionRequest(
            kind=kind,
            patterns=list(patterns or ()),
            filter=filter or "",
            rate_limit=rate_limit or 0.0,
            max_concurrency=_count(max_concurrency, "max_concurrency"),
            ordering=ordering or "",
            paused=paused,
        )
        if options is not None:
            request.options.CopyFrom(_struct(options, "options"))
        if retry_schedule is not None:
            request.retry_schedule.CopyFrom(_retry_schedule(retry_schedule))
        if max_pending_age is not None:
            request.max_pending_age.CopyFrom(to_duration(max_pending_age))
        return subscription_from_proto(await self._call(self.admin.CreateSubscription, request))

    async def get_subscription(self: _Connected, subscription_id: str) -> SubscriptionStatus:
        request = pb.GetSubscriptionRequest(id=subscription_id)
        return subscription_from_proto(await self._call(self.admin.GetSubscription, request))

    async def list_subscriptions(
        self: _Connected, *, kind: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[SubscriptionStatus], str]:
        """One page in id order (every push kind unless `kind`), and the next page's token ("" on the last)."""
        request = pb.ListSubscriptionsRequest(kind=kind or "", page_size=page_size, page_token=page_token)
        response = await self._call(self.admin.ListSubscriptions, request)
        return [subscription_from_proto(s) for s in response.subscriptions], response.next_page_token

    async def update_subscription(
        self: _Connected,
        subscription_id: str,
        *,
        patterns: Sequence[str] | None = None,
        filter: str | None = None,
        options: Mapping[str, object] | None = None,
        retry_schedule: Sequence[timedelta] | None = None,
        rate_limit: float | None = None,
        max_concurrency: int | None = None,
        max_pending_age: timedelta | None = None,
        ordering: str | None = None,
    ) -> SubscriptionStatus:
        """Change what is given (None: unchanged). `options` are merged into the current ones; `filter=""`
        removes the filter, `rate_limit=0` the limit."""
        request = pb.UpdateSubscriptionRequest(id=subscription_id, patterns=list(patterns or ()))
        if filter is not None:
            request.filter = filter
        if options is not None:
            request.options.CopyFrom(_struct(options, "options"))
        if retry_schedule is not None:
            request.retry_schedule.CopyFrom(_retry_schedule(retry_schedule))
        if rate_limit is not None:
            request.rate_limit = rate_limit
        if max_concurrency is not None:
            request.max_concurrency = _count(max_concurrency, "max_concurrency")
        if max_pending_age is not None:
            request.max_pending_age.CopyFrom(to_duration(max_pending_age))
        if ordering is not None:
            request.ordering = ordering
        return subscription_from_proto(await self._call(self.admin.UpdateSubscription, request))

    async def delete_subscription(self: _Connected, subscription_id: str) -> None:
        await self._call(self.admin.DeleteSubscription, pb.DeleteSubscriptionRequest(id=subscription_id))

    async def pause_subscription(self: _Connected, subscription_id: str) -> SubscriptionStatus:
        request = pb.PauseSubscriptionRequest(id=subscription_id)
        return subscription_from_proto(await self._call(self.admin.PauseSubscription, request))

    async def resume_subscription(self: _Connected, subscription_id: str) -> SubscriptionStatus:
        """Active again from paused or disabled (enable): held deliveries are released at once."""
        request = pb.ResumeSubscriptionRequest(id=subscription_id)
        return subscription_from_proto(await self._call(self.admin.ResumeSubscription, request))

    async def rotate_secret(self: _Connected, subscription_id: str, secret: str | None = None) -> SubscriptionStatus:
        """A new signing secret (given, or generated); the previous one keeps signing for 24 hours."""
        request = pb.RotateSubscriptionSecretRequest(id=subscription_id, secret=secret or "")
        return subscription_from_proto(await self._call(self.admin.RotateSubscriptionSecret, request))

    async def recover(self: _Connected, subscription_id: str, *, since: datetime, include_pending: bool = False) -> int:
        """Re-queue the dead deliveries created since `since` (and pending ones if asked); how many."""
        request = pb.RecoverSubscriptionRequest(
            id=subscription_id, since=to_timestamp(since), include_pending=include_pending
        )
        return int((await self._call(self.admin.RecoverSubscription, request)).recovered)

    async def replay(self: _Connected, subscription_id: str, *, since: datetime, patterns: Sequence[str] = ()) -> int:
        """Deliver again the stored events since `since` that match (default: its own patterns); the last seq."""
        request = pb.ReplayRequest(subscription_id=subscription_id, since=to_timestamp(since), patterns=list(patterns))
        return int((await self._call(self.admin.Replay, request)).upto_seq)

    async def list_deliveries(
        self: _Connected,
        *,
        subscription_id: str | None = None,
        event_id: str | None = None,
        source: str | None = None,
        id: str | None = None,
        state: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[DeliveryStatus], str]:
        """One page in id order; the event is named by `event_id` or by `source` and `id`."""
        request = pb.ListDeliveriesRequest(
            subscription_id=subscription_id or "", state=state or "", page_size=page_size, page_token=page_token
        )
        response = await self._call(self.admin.ListDeliveries, _with_event(request, event_id, source, id))
        return [delivery_from_proto(d) for d in response.deliveries], response.next_page_token

    async def get_delivery(self: _Connected, delivery_id: str) -> DeliveryStatus:
        """The delivery with every attempt, oldest first."""
        return delivery_from_proto(await self._call(self.admin.GetDelivery, pb.GetDeliveryRequest(id=delivery_id)))

    async def resend_delivery(self: _Connected, delivery_id: str) -> DeliveryStatus:
        """A new attempt now, outside the retry schedule."""
        request = pb.ResendDeliveryRequest(id=delivery_id)
        return delivery_from_proto(await self._call(self.admin.ResendDelivery, request))

    async def explain(
        self: _Connected,
        subscription_id: str,
        event_id: str | None = None,
        *,
        source: str | None = None,
        id: str | None = None,
    ) -> DeliveryExplanation:
        """Why the event was, or was not (yet), delivered to the subscription."""
        request = _with_event(pb.ExplainDeliveryRequest(subscription_id=subscription_id), event_id, source, id)
        return explanation_from_proto(await self._call(self.admin.ExplainDelivery, request))
