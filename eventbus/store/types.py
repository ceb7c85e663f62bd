"""The event-type catalogue in the store: the record and the `EventTypeStore` Protocol backends implement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from eventbus.errors import UnavailableError

MAX_SAMPLE_BYTES = 4 * 1024


@dataclass(frozen=True, slots=True)
class EventTypeRecord:
    """One event type: how often and when it was seen, its last event's data, and its registered JSON Schema.

    A type gets a row when its first event is stored (in the append transaction), or when a schema is registered
    for it ahead of its events (`count` 0, never seen).
    """

    type: str
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    sample_event_id: str | None
    sample: str | None  # the last event's data as JSON text (at most 4 KiB); None: no data, or see sample_omitted
    sample_omitted: str | None  # why no sample was kept: "too_large" | "not_json"; None: kept, or no data
    schema: str | None  # the registered JSON Schema, as JSON text
    schema_updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """A type's JSON Schema as the validation cache loads it."""

    type: str
    schema: str  # JSON text
    updated_at: datetime


@runtime_checkable
class EventTypeStore(Protocol):
    """The catalogue. Kept beside `Store` (eventbus/store/base.py) so a backend adds it as one more mixin; the
    counts themselves are written by `Store.append`, in the transaction that stores the events."""

    async def list_event_types(self, *, after: str, limit: int, prefix: str = "") -> list[EventTypeRecord]:
        """Types in name order after `after`, only those starting with `prefix` when it is given."""
        ...

    async def get_event_type(self, type: str) -> EventTypeRecord | None: ...

    async def set_event_schema(self, type: str, schema: str, *, now: datetime) -> EventTypeRecord:
        """Register (or replace) the type's schema; the type need not have been seen yet."""
        ...

    async def delete_event_schema(self, type: str, *, now: datetime) -> bool:
        """Remove the type's schema (and the type itself when none of its events was ever seen); False when it had
        none."""
        ...

    async def event_schemas(self) -> list[RegisteredSchema]:
        """Every registered schema: what the publish path validates against."""
        ...

    async def prune_event_types(self, *, older_than: datetime, limit: int) -> int:
        """Forget up to `limit` types last seen before `older_than` that have no schema."""
        ...


def event_type_store_of(store: object) -> EventTypeStore:
    """The store's catalogue operations; a backend without them cannot list types or register schemas."""
    if not isinstance(store, EventTypeStore):
        raise UnavailableError(f"the {type(store).__name__} store does not keep an event-type catalogue")
    return store
