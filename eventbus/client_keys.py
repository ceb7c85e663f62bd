"""The client's Admin calls for API keys, and what they return: `KeyStatus`, and `NewKey` (the key, shown once).

`EventBusClient` inherits `KeyCalls`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eventbus.grpc.convert import from_timestamp
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import admin_pb2_grpc


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """An API key as `keys list` prints it: never the key itself."""

    id: str  # key_...
    name: str
    scopes: tuple[str, ...]  # publish | subscribe | admin
    created_at: datetime
    last_used_at: datetime | None  # coarse: the server writes it about once a minute
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: `key` (`ebk_...`) is in this answer only; the server keeps only its SHA-256."""

    status: KeyStatus
    key: str


def key_from_proto(key: pb.ApiKey) -> KeyStatus:
    return KeyStatus(
        id=key.id,
        name=key.name,
        scopes=tuple(key.scopes),
        created_at=from_timestamp(key.created_at),
        last_used_at=from_timestamp(key.last_used_at) if key.HasField("last_used_at") else None,
        revoked_at=from_timestamp(key.revoked_at) if key.HasField("revoked_at") else None,
    )


class _Connected(Protocol):
    @property
    def admin(self) -> admin_pb2_grpc.AdminStub: ...

    async def _call(self, method: Any, request: Any) -> Any: ...


class KeyCalls:
    """API keys (mixed into `EventBusClient`); every call needs an admin key once the server has keys."""

    async def create_key(self: _Connected, scopes: Sequence[str], *, name: str = "") -> NewKey:
        """A new key with these scopes (`publish`, `subscribe`, `admin`: admin implies the others)."""
        response = await self._call(self.admin.CreateKey, pb.CreateKeyRequest(scopes=list(scopes), name=name))
        return NewKey(key_from_proto(response.api_key), response.key)

    async def list_keys(
        self: _Connected, *, include_revoked: bool = False, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[KeyStatus], str]:
        """One page in creation order, and the next page's token ("" on the last)."""
        request = pb.ListKeysRequest(include_revoked=include_revoked, page_size=page_size, page_token=page_token)
        response = await self._call(self.admin.ListKeys, request)
        return [key_from_proto(k) for k in response.keys], response.next_page_token

    async def revoke_key(self: _Connected, key_id: str) -> KeyStatus:
        """Refused by the server from the next call on."""
        return key_from_proto(await self._call(self.admin.RevokeKey, pb.RevokeKeyRequest(id=key_id)))
