"""Resources the config file manages: the marker that says so, and the `ManagedStore` Protocol backends implement.

A marker row ties a declared name (a source's or a subscription's) to the resource it made and to a fingerprint of
the declaration last applied. The API refuses to change or delete what carries a marker; the file owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from eventbus.errors import FailedPreconditionError

SOURCE = "source"
SUBSCRIPTION = "subscription"


@dataclass(frozen=True, slots=True)
class ManagedRecord:
    resource: str  # SOURCE or SUBSCRIPTION
    name: str  # the declared name: the resource's identity across restarts
    resource_id: str  # src_... or sub_...; "" while pending (claimed, the resource perhaps not made yet)
    digest: str  # fingerprint of the declaration last applied ("" while pending)
    updated_at: datetime

    @property
    def pending(self) -> bool:
        return not self.resource_id


@runtime_checkable
class ManagedStore(Protocol):
    async def list_managed(self) -> list[ManagedRecord]: ...

    async def find_managed(self, resource_id: str) -> ManagedRecord | None: ...

    async def put_managed(self, record: ManagedRecord) -> None:
        """Insert, or replace the one with the same (resource, name)."""
        ...

    async def claim_managed(self, record: ManagedRecord) -> bool:
        """Insert unless one with the same (resource, name) exists (True when inserted): written before the
        resource is made, so a crash in between leaves a claim the next start adopts the resource by."""
        ...

    async def delete_managed(self, resource: str, name: str) -> None: ...


async def refuse_if_managed(store: object, resource_id: str, action: str) -> None:
    """The API may not `action` a resource the config file manages (`FailedPreconditionError`, naming the file)."""
    if not isinstance(store, ManagedStore):
        return
    record = await store.find_managed(resource_id)
    if record is not None:
        raise FailedPreconditionError(
            f"{record.resource} {resource_id} is managed by the config file (declared as {record.name!r}): "
            f"it cannot {action} through the API; change the file and reload (SIGHUP)"
        )
