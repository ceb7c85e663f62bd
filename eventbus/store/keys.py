"""API keys in the store: the record (digest only, never the key) and the `KeyStore` Protocol backends implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from eventbus.errors import UnavailableError


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as stored: `digest` is `sha256:<hex>` of the whole key text, which is never kept."""

    key_id: str  # key_<ULID>
    name: str
    digest: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None = None  # coarse: written in batches, not on every call
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@runtime_checkable
class KeyStore(Protocol):
    """API keys. Kept beside `Store` (eventbus/store/base.py) so a backend adds them as one more mixin."""

    async def create_key(self, record: KeyRecord) -> None:
        """Store a new key (its id and digest are new: the caller generated them)."""
        ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, *, include_revoked: bool, after_id: str, limit: int) -> list[KeyRecord]:
        """Keys in id (creation) order after `after_id`; revoked ones only when asked."""
        ...

    async def active_keys(self) -> list[KeyRecord]:
        """Every key not revoked: what the server accepts, loaded at start-up."""
        ...

    async def revoke_key(self, key_id: str, *, now: datetime) -> KeyRecord | None:
        """Mark it revoked (a second revoke keeps the first time); None when no such key exists."""
        ...

    async def touch_keys(self, key_ids: Sequence[str], *, now: datetime) -> None:
        """Record that these keys were used by `now` (never moves `last_used_at` back)."""
        ...


def key_store_of(store: object) -> KeyStore:
    """The store's API-key operations; a backend without them cannot serve authenticated calls."""
    if not isinstance(store, KeyStore):
        raise UnavailableError(f"the {type(store).__name__} store does not keep API keys")
    return store
