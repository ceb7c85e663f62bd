"""`eventbus.v1.Admin`, inbound sources: decode, call the service layer, encode (secrets only as revealed once)."""

from __future__ import annotations

from eventbus.auth import KeyRing, Scope
from eventbus.bus.sources import SourceInfo, Sources
from eventbus.errors import InvalidArgumentError
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert_admin import create_source_input, source_to_proto, update_source_input
from eventbus.v1 import admin_pb2 as pb

_UNREACHABLE = "unreachable: rpc() aborts on error"


def _ref(source: str) -> str:
    if not source:
        raise InvalidArgumentError.for_field("source", "the source's name or id (src_...) is required")
    return source


class SourcesAdmin:
    """Mixed into `AdminServicer`, which sets the key ring and the service."""

    keys: KeyRing
    sources: Sources

    def _source(self, info: SourceInfo) -> pb.Source:
        return source_to_proto(info, self.sources.bus.clock.now())

    async def CreateSource(self, request: pb.CreateSourceRequest, context: Context) -> pb.Source:
        async with rpc(context, "CreateSource", self.keys, Scope.ADMIN):
            return self._source(await self.sources.create(create_source_input(request)))
        raise AssertionError(_UNREACHABLE)

    async def GetSource(self, request: pb.GetSourceRequest, context: Context) -> pb.Source:
        async with rpc(context, "GetSource", self.keys, Scope.ADMIN):
            return self._source(await self.sources.get(_ref(request.source)))
        raise AssertionError(_UNREACHABLE)

    async def ListSources(self, request: pb.ListSourcesRequest, context: Context) -> pb.ListSourcesResponse:
        async with rpc(context, "ListSources", self.keys, Scope.ADMIN):
            infos, token = await self.sources.list_page(page_size=request.page_size, page_token=request.page_token)
            return pb.ListSourcesResponse(sources=[self._source(i) for i in infos], next_page_token=token)
        raise AssertionError(_UNREACHABLE)

    async def UpdateSource(self, request: pb.UpdateSourceRequest, context: Context) -> pb.Source:
        async with rpc(context, "UpdateSource", self.keys, Scope.ADMIN):
            return self._source(await self.sources.update(_ref(request.source), update_source_input(request)))
        raise AssertionError(_UNREACHABLE)

    async def RotateSourceSecret(self, request: pb.RotateSourceSecretRequest, context: Context) -> pb.Source:
        async with rpc(context, "RotateSourceSecret", self.keys, Scope.ADMIN):
            return self._source(await self.sources.rotate_secret(_ref(request.source), request.secret or None))
        raise AssertionError(_UNREACHABLE)

    async def DeleteSource(self, request: pb.DeleteSourceRequest, context: Context) -> pb.DeleteSourceResponse:
        async with rpc(context, "DeleteSource", self.keys, Scope.ADMIN):
            await self.sources.delete(_ref(request.source))
            return pb.DeleteSourceResponse()
        raise AssertionError(_UNREACHABLE)
