"""`eventbus.v1.Admin`, API keys: create (the key is in this answer only), list, revoke."""

from __future__ import annotations

from eventbus.auth import KeyRing, Scope
from eventbus.bus.keys import ApiKeys, KeyInfo
from eventbus.grpc.context import Context, rpc
from eventbus.grpc.convert import to_timestamp
from eventbus.v1 import admin_pb2 as pb

_UNREACHABLE = "unreachable: rpc() aborts on error"


def key_to_proto(info: KeyInfo) -> pb.ApiKey:
    key = pb.ApiKey(
        id=info.key_id, name=info.name, scopes=[s.value for s in info.scopes], created_at=to_timestamp(info.created_at)
    )
    if info.last_used_at is not None:
        key.last_used_at.CopyFrom(to_timestamp(info.last_used_at))
    if info.revoked_at is not None:
        key.revoked_at.CopyFrom(to_timestamp(info.revoked_at))
    return key


class KeysAdmin:
    """Mixed into `AdminServicer`, which sets the key ring and the service."""

    keys: KeyRing
    api_keys: ApiKeys

    async def CreateKey(self, request: pb.CreateKeyRequest, context: Context) -> pb.CreateKeyResponse:
        async with rpc(context, "CreateKey", self.keys, Scope.ADMIN):
            created = await self.api_keys.create(list(request.scopes), name=request.name)
            return pb.CreateKeyResponse(api_key=key_to_proto(created.info), key=created.key)
        raise AssertionError(_UNREACHABLE)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        async with rpc(context, "ListKeys", self.keys, Scope.ADMIN):
            infos, token = await self.api_keys.list(
                include_revoked=request.include_revoked, page_size=request.page_size, page_token=request.page_token
            )
            return pb.ListKeysResponse(keys=[key_to_proto(i) for i in infos], next_page_token=token)
        raise AssertionError(_UNREACHABLE)

    async def RevokeKey(self, request: pb.RevokeKeyRequest, context: Context) -> pb.ApiKey:
        async with rpc(context, "RevokeKey", self.keys, Scope.ADMIN):
            return key_to_proto(await self.api_keys.revoke(request.id))
        raise AssertionError(_UNREACHABLE)
