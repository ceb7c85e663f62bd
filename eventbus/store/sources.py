"""The store contract for inbound sources and the raw requests their events came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from eventbus.errors import UnavailableError
from eventbus.model import Event


@dataclass(frozen=True, slots=True)
class SourceSecret:
    secret: str
    expires_at: datetime | None = None  # a rotated-out secret keeps verifying until then


@dataclass(frozen=True, slots=True)
class Source:
    """A named inbound receiver: `/hooks/<name>`, verified and parsed by its connector."""

    id: str
    name: str
    connector: str
    secrets: tuple[SourceSecret, ...]
    options: dict[str, object]
    enabled: bool
    rate_limit: float | None  # requests per second; None: unlimited
    created_at: datetime
    updated_at: datetime

    def active_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets that verify now, newest first (two during a rotation)."""
        return tuple(s.secret for s in self.secrets if s.expires_at is None or s.expires_at > now)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    name: str
    connector: str
    secrets: tuple[SourceSecret, ...] = ()
    options: dict[str, object] = field(default_factory=dict)
    enabled: bool = True
    rate_limit: float | None = None


@dataclass(frozen=True, slots=True)
class RawRequest:
    """An accepted inbound request as it is kept (already redacted by the caller)."""

    source_id: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes
    remote: str | None
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """One event of an inbound request: its CloudEvents identity and what the store made of it."""

    id: str
    source: str
    event_id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StoredRequest:
    request_id: str
    received_at: datetime
    request: RawRequest
    outcomes: tuple[IngestOutcome, ...]


@runtime_checkable
class SourceStore(Protocol):
    """Sources and raw requests; every method is atomic."""

    async def create_source(self, spec: SourceSpec, *, now: datetime) -> Source:
        """Create it; `AlreadyExistsError` when a live source has that name."""
        ...

    async def get_source(self, source_id: str) -> Source | None: ...

    async def find_source(self, name: str) -> Source | None: ...

    async def list_sources(self, *, after_id: str, limit: int) -> list[Source]: ...

    async def update_source(
        self, source_id: str, changes: dict[str, object], *, now: datetime, if_updated_at: datetime
    ) -> Source:
        """Change `secrets`, `options`, `enabled`, `rate_limit`; `ConcurrentUpdateError` if it changed meanwhile."""
        ...

    async def delete_source(self, source_id: str, *, now: datetime) -> bool: ...

    async def ingest(
        self,
        events: Sequence[Event],
        request: RawRequest,
        *,
        now: datetime,
        dedup_window: timedelta,
    ) -> tuple[list[IngestOutcome], bool]:
        """Store the events (fanned out) and the raw request in one transaction.

        When the request names a `dedup_key` already seen for its source inside the window, nothing is stored:
        the first request's outcomes come back exactly as first answered, with True ("a redelivery").
        """
        ...

    async def find_request(self, event_seq: int) -> StoredRequest | None:
        """The raw request an event came from, while retention keeps it."""
        ...

    async def prune_requests(self, *, older_than: datetime, limit: int) -> int: ...


def source_store_of(store: object) -> SourceStore:
    """The store's source operations; a backend without them cannot receive provider webhooks."""
    if not isinstance(store, SourceStore):
        raise UnavailableError(f"the {type(store).__name__} store does not keep sources")
    return store
