"""API keys (DESIGN.md §5 Auth): create (the key is shown once), list, revoke; the server's key ring kept current."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from eventbus.auth import KEY_PREFIX, ApiKey, KeyRing, Scope, hash_key
from eventbus.clock import Clock
from eventbus.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from eventbus.ids import is_id, new_id
from eventbus.store.keys import KeyRecord, KeyStore

log = structlog.get_logger("eventbus.keys")
MAX_NAME = 200
SCOPE_NAMES = ", ".join(s.value for s in Scope)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What anyone may see of a key: never the key text, never its digest."""

    key_id: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    info: KeyInfo
    key: str  # `ebk_<key id>_<secret>`: in this answer only, never stored


def parse_scopes(values: Sequence[str]) -> tuple[Scope, ...]:
    """Known scopes, deduplicated, in the order of `Scope`; at least one."""
    found: set[Scope] = set()
    for value in values:
        try:
            found.add(Scope(value.strip().lower()))
        except ValueError:
            raise InvalidArgumentError.for_field("scopes", f"{value!r} is not a scope (use {SCOPE_NAMES})") from None
    if not found:
        raise InvalidArgumentError.for_field("scopes", f"give at least one scope ({SCOPE_NAMES})")
    return tuple(s for s in Scope if s in found)


def _info(record: KeyRecord) -> KeyInfo:
    return KeyInfo(
        key_id=record.key_id,
        name=record.name,
        scopes=tuple(Scope(s) for s in record.scopes),
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
    )


def _ring_key(record: KeyRecord) -> ApiKey:
    return ApiKey(record.key_id, record.digest, frozenset(Scope(s) for s in record.scopes))


class ApiKeys:
    """The stored keys and the ring that enforces them. The ring changes only after the store committed.

    Once the ring holds a key it must keep one with `admin`: the first key created has to be an admin key, and the
    last admin key cannot be revoked. Otherwise a server could lock out its operators, or become open again.
    """

    def __init__(self, store: KeyStore, ring: KeyRing, clock: Clock, *, usage_every: float = 60.0) -> None:
        self.store = store
        self.ring = ring
        self.clock = clock
        self.usage_every = usage_every  # seconds of real time between `last_used_at` writes
        self._changing = asyncio.Lock()  # one process per SQLite file: a lock here serialises every change
        self._usage_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """The stored keys into the ring (start-up)."""
        self.ring.load_stored(_ring_key(r) for r in await self.store.active_keys())

    async def start(self) -> None:
        self._usage_task = asyncio.create_task(self._write_usage_forever(), name="eventbus-key-usage")

    async def stop(self) -> None:
        if self._usage_task is not None:
            self._usage_task.cancel()
            await asyncio.gather(self._usage_task, return_exceptions=True)
            self._usage_task = None
        with contextlib.suppress(Exception):
            await self.write_usage()

    async def create(self, scopes: Sequence[str], *, name: str = "") -> NewKey:
        parsed = parse_scopes(scopes)
        name = name.strip()
        if len(name) > MAX_NAME or not name.isprintable():
            raise InvalidArgumentError.for_field("name", f"at most {MAX_NAME} printable characters")
        key_id = new_id("key")
        key = f"{KEY_PREFIX}_{key_id.removeprefix('key_')}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(
            key_id=key_id,
            name=name,
            digest=hash_key(key),
            scopes=tuple(s.value for s in parsed),
            created_at=self.clock.now(),
        )
        async with self._changing:
            if Scope.ADMIN not in parsed and not self.ring.has_admin:
                raise FailedPreconditionError(
                    "the first key must have the admin scope: once a key exists every call needs one, "
                    "and only an admin key can manage keys"
                )
            await self.store.create_key(record)
            self.ring.add_stored(_ring_key(record))
        log.info("api_key_created", key_id=key_id, scopes=record.scopes)
        return NewKey(_info(record), key)

    async def list(
        self, *, include_revoked: bool = False, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[KeyInfo], str]:
        """One page in creation order, and the next page's token ("" on the last page)."""
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        if page_token and not is_id(page_token, "key"):
            raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
        await self.write_usage()
        size = page_size or 100
        found = await self.store.list_keys(include_revoked=include_revoked, after_id=page_token, limit=size + 1)
        page = found[:size]
        return [_info(r) for r in page], (page[-1].key_id if len(found) > size else "")

    async def revoke(self, key_id: str) -> KeyInfo:
        """Refused from the next call on. Revoking a revoked key changes nothing."""
        if not key_id:
            raise InvalidArgumentError.for_field("id", "the key id (key_...) is required")
        async with self._changing:
            record = await self.store.get_key(key_id)
            if record is None:
                raise NotFoundError(f"no API key {key_id!r}")
            if record.active and Scope.ADMIN.value in record.scopes and not self.ring.admins_besides(key_id):
                raise FailedPreconditionError(
                    f"{key_id} is the last admin key: create another admin key first, or no one could manage keys"
                )
            revoked = await self.store.revoke_key(key_id, now=self.clock.now())
            self.ring.discard_stored(key_id)
        if revoked is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if record.active:
            log.info("api_key_revoked", key_id=key_id)
        return _info(revoked)

    async def write_usage(self) -> None:
        """Stamp `last_used_at` on the keys used since the last write (coarse: the write time, not each call)."""
        used = self.ring.take_used()
        if used:
            await self.store.touch_keys(sorted(used), now=self.clock.now())

    async def _write_usage_forever(self) -> None:
        while True:
            await asyncio.sleep(self.usage_every)
            try:
                await self.write_usage()
            except Exception as exc:  # the stamps are advisory; the next round writes newer ones
                log.warning("api_key_usage_not_written", error=str(exc))
