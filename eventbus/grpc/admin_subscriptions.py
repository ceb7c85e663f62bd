"""`eventbus.v1.Admin`, subscriptions and deliveries: decode, call the service layer, encode."""

from __future__ import annotations

from eventbus.auth import KeyRing, Scope
from eventbus.bus.deliveries import EventRef
from eventbus.bus.services import Services
from eventbus.bus.subscriptions import SubscriptionInfo
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert_admin import (
    create_input,
    delivery_to_proto,
    event_ref,
    explanation_to_proto,
    required_since,
    subscription_to_proto,
    update_input,
)
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import admin_pb2_grpc as pb_grpc

_UNREACHABLE = "unreachable: rpc() aborts on error"


class SubscriptionsAdmin(pb_grpc.AdminServicer):
    """The subscription and delivery half of the Admin service; `AdminServicer` adds the consumer groups."""

    def __init__(self, services: Services, keys: KeyRing) -> None:
        self.services = services
        self.subscriptions = services.subscriptions
        self.deliveries = services.deliveries
        self.keys = keys

    def _subscription(self, info: SubscriptionInfo) -> pb.Subscription:
        return subscription_to_proto(info, self.services.bus.clock.now())

    async def CreateSubscription(self, request: pb.CreateSubscriptionRequest, context: Context) -> pb.Subscription:
        async with rpc(context, "CreateSubscription", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.create(create_input(request)))
        raise AssertionError(_UNREACHABLE)

    async def GetSubscription(self, request: pb.GetSubscriptionRequest, context: Context) -> pb.Subscription:
        async with rpc(context, "GetSubscription", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.get(request.id))
        raise AssertionError(_UNREACHABLE)

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        async with rpc(context, "ListSubscriptions", self.keys, Scope.ADMIN):
            infos, token = await self.subscriptions.list_page(
                kind=request.kind or None, page_size=request.page_size, page_token=request.page_token
            )
            return pb.ListSubscriptionsResponse(
                subscriptions=[self._subscription(i) for i in infos], next_page_token=token
            )
        raise AssertionError(_UNREACHABLE)

    async def UpdateSubscription(self, request: pb.UpdateSubscriptionRequest, context: Context) -> pb.Subscription:
        async with rpc(context, "UpdateSubscription", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.update(request.id, update_input(request)))
        raise AssertionError(_UNREACHABLE)

    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: Context
    ) -> pb.DeleteSubscriptionResponse:
        async with rpc(context, "DeleteSubscription", self.keys, Scope.ADMIN):
            await self.subscriptions.delete(request.id)
            return pb.DeleteSubscriptionResponse()
        raise AssertionError(_UNREACHABLE)

    async def PauseSubscription(self, request: pb.PauseSubscriptionRequest, context: Context) -> pb.Subscription:
        async with rpc(context, "PauseSubscription", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.pause(request.id))
        raise AssertionError(_UNREACHABLE)

    async def ResumeSubscription(self, request: pb.ResumeSubscriptionRequest, context: Context) -> pb.Subscription:
        async with rpc(context, "ResumeSubscription", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.resume(request.id))
        raise AssertionError(_UNREACHABLE)

    async def RotateSubscriptionSecret(
        self, request: pb.RotateSubscriptionSecretRequest, context: Context
    ) -> pb.Subscription:
        async with rpc(context, "RotateSubscriptionSecret", self.keys, Scope.ADMIN):
            return self._subscription(await self.subscriptions.rotate_secret(request.id, request.secret or None))
        raise AssertionError(_UNREACHABLE)

    async def RecoverSubscription(
        self, request: pb.RecoverSubscriptionRequest, context: Context
    ) -> pb.RecoverSubscriptionResponse:
        async with rpc(context, "RecoverSubscription", self.keys, Scope.ADMIN):
            recovered = await self.subscriptions.recover(
                request.id, since=required_since(request), include_pending=request.include_pending
            )
            return pb.RecoverSubscriptionResponse(recovered=recovered)
        raise AssertionError(_UNREACHABLE)

    async def Replay(self, request: pb.ReplayRequest, context: Context) -> pb.ReplayResponse:
        async with rpc(context, "Replay", self.keys, Scope.ADMIN):
            upto = await self.subscriptions.replay(
                request.subscription_id, since=required_since(request), patterns=list(request.patterns)
            )
            return pb.ReplayResponse(upto_seq=upto)
        raise AssertionError(_UNREACHABLE)

    async def ListDeliveries(self, request: pb.ListDeliveriesRequest, context: Context) -> pb.ListDeliveriesResponse:
        async with rpc(context, "ListDeliveries", self.keys, Scope.ADMIN):
            records, token = await self.deliveries.list_page(
                subscription_id=request.subscription_id,
                event=event_ref(request),
                state=request.state,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return pb.ListDeliveriesResponse(deliveries=[delivery_to_proto(r) for r in records], next_page_token=token)
        raise AssertionError(_UNREACHABLE)

    async def GetDelivery(self, request: pb.GetDeliveryRequest, context: Context) -> pb.DeliveryRecord:
        async with rpc(context, "GetDelivery", self.keys, Scope.ADMIN):
            record, attempts = await self.deliveries.get(request.id)
            return delivery_to_proto(record, attempts)
        raise AssertionError(_UNREACHABLE)

    async def ResendDelivery(self, request: pb.ResendDeliveryRequest, context: Context) -> pb.DeliveryRecord:
        async with rpc(context, "ResendDelivery", self.keys, Scope.ADMIN):
            return delivery_to_proto(await self.deliveries.resend(request.id))
        raise AssertionError(_UNREACHABLE)

    async def ExplainDelivery(self, request: pb.ExplainDeliveryRequest, context: Context) -> pb.Explanation:
        async with rpc(context, "ExplainDelivery", self.keys, Scope.ADMIN):
            ref = event_ref(request) or EventRef()  # none given: the service layer says what is missing
            return explanation_to_proto(await self.deliveries.why(request.subscription_id, ref))
        raise AssertionError(_UNREACHABLE)
