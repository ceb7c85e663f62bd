"""Idempotency keys of REST POSTs: the `IdempotencyStore` Protocol backends implement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from eventbus.errors import UnavailableError

IDEMPOTENCY_KEEP_FOR = timedelta(hours=24)  # an answer is given again for this long
# A claim unanswered this long belongs to a request that died with its process: a retry may take it over.
IDEMPOTENCY_STALE_AFTER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What a key holds: the body digest it was first used with and, once answered, the answer."""

    body_sha256: str
    status: int | None  # None: the first request is still in progress
    content_type: str | None
    body: bytes | None
    created_at: datetime


@runtime_checkable
class IdempotencyStore(Protocol):
    async def claim_idempotency_key(
        self,
        scope: str,
        key: str,
        body_sha256: str,
        *,
        now: datetime,
        expires_before: datetime,
        stale_before: datetime,
    ) -> StoredAnswer | None:
        """Claim (scope, key) for a new request; None when claimed now, else what the key already holds. A key
        created before `expires_before` is expired, and an unanswered claim made before `stale_before` is stale
        (its request died): either is replaced and claimed."""
        ...

    async def answer_idempotency_key(
        self, scope: str, key: str, *, status: int, content_type: str, body: bytes
    ) -> None:
        """Keep the answer of the request that claimed the key."""
        ...

    async def release_idempotency_key(self, scope: str, key: str) -> None:
        """Forget an unanswered claim (the request failed before answering): the key may be used again."""
        ...

    async def prune_idempotency_keys(self, *, older_than: datetime, limit: int) -> int: ...


def idempotency_store_of(store: object) -> IdempotencyStore:
    if not isinstance(store, IdempotencyStore):
        raise UnavailableError(f"the {type(store).__name__} store does not keep idempotency keys")
    return store
