"""Plugin destinations' persistent key-value state: the `StateStore` Protocol backends implement."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from eventbus.errors import UnavailableError

MAX_KEY_LENGTH = 200
MAX_VALUE_LENGTH = 64 * 1024
MAX_KEYS = 100  # per subscription


@runtime_checkable
class StateStore(Protocol):
    """Kept beside `Store` (eventbus/store/base.py) so a backend adds it as one more mixin."""

    async def state_get(self, subscription_id: str, key: str, *, now: datetime) -> str | None:
        """The value, or None when absent or expired at `now`."""
        ...

    async def state_set(
        self, subscription_id: str, key: str, value: str, *, expires_at: datetime | None, now: datetime
    ) -> bool:
        """Store it (replacing any value); False, storing nothing, when the subscription already holds
        `MAX_KEYS` live keys and `key` is not one of them."""
        ...

    async def state_delete(self, subscription_id: str, key: str) -> None: ...

    async def state_use(self, scope: str, subscription_id: str) -> None:
        """Record that the subscription uses the shared scope (whose values are kept under `scope` as if it
        were a subscription id): they are removed once every subscription that used it is purged."""
        ...


def state_store_of(store: object) -> StateStore:
    """The store's destination-state operations; a backend without them cannot serve plugin destinations."""
    if not isinstance(store, StateStore):
        raise UnavailableError(f"the {type(store).__name__} store does not keep destination state")
    return store
