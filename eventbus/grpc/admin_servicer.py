"""`eventbus.v1.Admin`: consumer groups (list, show with lag, seek, delete); the other resources mixed in."""

from __future__ import annotations

from eventbus.auth import KeyRing, Scope
from eventbus.bus.groups import GroupInfo
from eventbus.bus.services import Services
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.admin_events import EventsAdmin
from eventbus.grpc.admin_keys import KeysAdmin
from eventbus.grpc.admin_sources import SourcesAdmin
from eventbus.grpc.admin_subscriptions import SubscriptionsAdmin
from eventbus.grpc.admin_types import TypesAdmin
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert import from_timestamp, to_duration, to_timestamp
from eventbus.store.base import StartPosition
from eventbus.v1 import admin_pb2 as pb


class AdminServicer(EventsAdmin, KeysAdmin, SourcesAdmin, TypesAdmin, SubscriptionsAdmin):
    def __init__(self, services: Services, keys: KeyRing) -> None:
        super().__init__(services, keys)
        self.groups = services.groups
        self.api_keys = services.api_keys
        self.sources = services.sources
        self.types = services.types

    def _group(self, info: GroupInfo) -> pb.Group:
        subscription, stats = info.subscription, info.stats
        now = self.groups.bus.clock.now()
        group = pb.Group(
            name=info.name,
            subscription_id=subscription.id,
            patterns=list(subscription.patterns),
            filter=subscription.filter_json or "",
            ephemeral=subscription.ephemeral,
            created_at=to_timestamp(subscription.created_at),
            last_active_at=to_timestamp(subscription.last_active_at),
            lag=stats.pending + stats.leased,
            pending=stats.pending,
            leased=stats.leased,
            dead=stats.dead,
            succeeded=stats.succeeded,
            active_streams=info.active_streams,
            retry_schedule=[to_duration(d) for d in subscription.retry_schedule],
        )
        if stats.oldest_pending_at is not None:
            group.oldest_pending_age.CopyFrom(to_duration(max(now - stats.oldest_pending_at, now - now)))
        return group

    async def ListGroups(self, request: pb.ListGroupsRequest, context: Context) -> pb.ListGroupsResponse:
        async with rpc(context, "ListGroups", self.keys, Scope.ADMIN):
            infos, token = await self.groups.list(page_size=request.page_size, page_token=request.page_token)
            return pb.ListGroupsResponse(groups=[self._group(i) for i in infos], next_page_token=token)
        raise AssertionError("unreachable: rpc() aborts on error")

    async def GetGroup(self, request: pb.GetGroupRequest, context: Context) -> pb.Group:
        async with rpc(context, "GetGroup", self.keys, Scope.ADMIN):
            return self._group(await self.groups.get(_name(request.name)))
        raise AssertionError("unreachable: rpc() aborts on error")

    async def SeekGroup(self, request: pb.SeekGroupRequest, context: Context) -> pb.Group:
        async with rpc(context, "SeekGroup", self.keys, Scope.ADMIN):
            which = request.WhichOneof("to")
            if which == "seq":
                start = StartPosition(edge="seq", seq=request.seq)
            elif which == "time":
                start = StartPosition(edge="time", time=from_timestamp(request.time))
            else:
                raise InvalidArgumentError.for_field("to", "give a seq or a time to seek to")
            return self._group(await self.groups.seek(_name(request.name), start))
        raise AssertionError("unreachable: rpc() aborts on error")

    async def DeleteGroup(self, request: pb.DeleteGroupRequest, context: Context) -> pb.DeleteGroupResponse:
        async with rpc(context, "DeleteGroup", self.keys, Scope.ADMIN):
            await self.groups.delete(_name(request.name))
            return pb.DeleteGroupResponse()
        raise AssertionError("unreachable: rpc() aborts on error")


def _name(name: str) -> str:
    if not name:
        raise InvalidArgumentError.for_field("name", "the group name is required")
    return name
