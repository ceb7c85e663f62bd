"""The client's Admin calls for inbound sources, and what they return: `SourceStatus` (never a secret, except the
ones revealed once by create and rotate).

`EventBusClient` inherits `SourceCalls`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.protobuf import json_format

from eventbus.client_admin import _struct
from eventbus.client_values import _plain_number
from eventbus.grpc.convert import from_timestamp
from eventbus.v1 import admin_pb2 as pb
from eventbus.v1 import admin_pb2_grpc


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """An inbound source as `sources show` prints it: where senders POST, its connector and settings."""

    id: str  # src_...
    name: str
    connector: str
    path: str  # /hooks/<name>
    options: dict[str, object]  # the connector's, as it validated them
    enabled: bool
    rate_limit: float | None  # requests per second; None: unlimited
    created_at: datetime
    updated_at: datetime
    secrets_count: int  # the secrets that verify now: two during a rotation's grace
    previous_secret_expires_at: datetime | None  # a rotated-out secret stops verifying then
    revealed_secrets: tuple[str, ...] = ()  # create (a generated secret) and rotate only: shown once

    @property
    def secret(self) -> str | None:
        """The secret this answer reveals (the generated or the rotated-in one), if any."""
        return self.revealed_secrets[0] if self.revealed_secrets else None


def source_from_proto(message: pb.Source) -> SourceStatus:
    options = _plain_number(json_format.MessageToDict(message.options))  # a map on the wire: sort for a stable order
    return SourceStatus(
        id=message.id,
        name=message.name,
        connector=message.connector,
        path=message.path,
        options=dict(sorted(options.items())) if isinstance(options, dict) else {},
        enabled=message.enabled,
        rate_limit=message.rate_limit or None,
        created_at=from_timestamp(message.created_at),
        updated_at=from_timestamp(message.updated_at),
        secrets_count=message.secrets_count,
        previous_secret_expires_at=(
            from_timestamp(message.previous_secret_expires_at)
            if message.HasField("previous_secret_expires_at")
            else None
        ),
        revealed_secrets=tuple(message.revealed_secrets),
    )


class _Connected(Protocol):
    @property
    def admin(self) -> admin_pb2_grpc.AdminStub: ...

    async def _call(self, method: Any, request: Any) -> Any: ...


class SourceCalls:
    """Inbound sources, the receivers behind `POST /hooks/<name>` (mixed into `EventBusClient`).

    A source is named by its name or its id (`src_...`) alike."""

    async def create_source(
        self: _Connected,
        name: str,
        connector: str,
        *,
        secrets: Sequence[str] = (),
        options: Mapping[str, object] | None = None,
        enabled: bool = True,
        rate_limit: float | None = None,
    ) -> SourceStatus:
        """A new source at `/hooks/<name>`; without `secrets` one is generated and is in `secret` this once."""
        request = pb.CreateSourceRequest(
            name=name, connector=connector, secrets=list(secrets), enabled=enabled, rate_limit=rate_limit or 0.0
        )
        if options is not None:
            request.options.CopyFrom(_struct(options, "options"))
        return source_from_proto(await self._call(self.admin.CreateSource, request))

    async def get_source(self: _Connected, source: str) -> SourceStatus:
        return source_from_proto(await self._call(self.admin.GetSource, pb.GetSourceRequest(source=source)))

    async def list_sources(
        self: _Connected, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[SourceStatus], str]:
        """One page in id order, and the next page's token ("" on the last)."""
        request = pb.ListSourcesRequest(page_size=page_size, page_token=page_token)
        response = await self._call(self.admin.ListSources, request)
        return [source_from_proto(s) for s in response.sources], response.next_page_token

    async def update_source(
        self: _Connected,
        source: str,
        *,
        secrets: Sequence[str] | None = None,
        options: Mapping[str, object] | None = None,
        enabled: bool | None = None,
        rate_limit: float | None = None,
    ) -> SourceStatus:
        """Change what is given (None: unchanged). `secrets` replaces them all (no grace; see
        `rotate_source_secret`), `options` are merged into the current ones, `rate_limit=0` removes the limit."""
        request = pb.UpdateSourceRequest(source=source)
        if secrets is not None:
            request.secrets.CopyFrom(pb.SourceSecrets(secrets=list(secrets)))
        if options is not None:
            request.options.CopyFrom(_struct(options, "options"))
        if enabled is not None:
            request.enabled = enabled
        if rate_limit is not None:
            request.rate_limit = rate_limit
        return source_from_proto(await self._call(self.admin.UpdateSource, request))

    async def rotate_source_secret(self: _Connected, source: str, secret: str | None = None) -> SourceStatus:
        """A new secret (given, or generated: in `secret` this once); the current one keeps verifying for 24 h."""
        request = pb.RotateSourceSecretRequest(source=source, secret=secret or "")
        return source_from_proto(await self._call(self.admin.RotateSourceSecret, request))

    async def delete_source(self: _Connected, source: str) -> None:
        await self._call(self.admin.DeleteSource, pb.DeleteSourceRequest(source=source))
