"""Stores whose files keep freed space until told to give it back (SQLite), and what the upkeep asks of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ReclaimedSpace:
    """One round of giving space back: pages returned to the file system, and what is left to return."""

    pages_returned: int
    free_pages_left: int
    wal_truncated: bool  # the write-ahead log is small, or was checkpointed and cut to zero bytes


@runtime_checkable
class SpaceReclaimer(Protocol):
    async def reclaim_space(self, *, max_pages: int) -> ReclaimedSpace:
        """Return up to `max_pages` free pages to the file system, in small steps that let writes in between, then
        checkpoint and truncate the write-ahead log if it has grown large and no reader holds it."""
        ...
