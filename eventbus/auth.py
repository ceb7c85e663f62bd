"""API keys: `ebk_<key id>_<secret>`, kept only as `sha256:<hex>`, each with scopes (admin implies all)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from eventbus.errors import PermissionDeniedError, UnauthenticatedError

KEY_PREFIX = "ebk"


class Scope(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ADMIN = "admin"


OPEN: Final = "open"
Access = Scope | Literal["open"]  # what a route or an RPC needs: a scope, or no key at all


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    digest: str  # "sha256:<hex>"
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def hash_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str:
    """`ebk_<id>_<secret>` → `key_<id>`; any other shape → `key_cli` (the single `--api-key`)."""
    parts = secret.split("_")
    return f"key_{parts[1]}" if len(parts) >= 3 and parts[0] == KEY_PREFIX and parts[1] else "key_cli"


class KeyRing:
    """The keys the server accepts. Empty: the server is open (and refuses to listen beyond loopback).

    Two kinds: the configured ones (`--api-key`, every scope, given at start-up) and the stored ones (`eventbus
    keys create`), loaded from the store at start-up and kept current in-process by the service layer on create
    and revoke. One server process owns a SQLite file, so this process sees every change; several processes
    sharing a store (PostgreSQL) will need a reload on change (LISTEN/NOTIFY or a short poll).
    """

    def __init__(self, keys: list[ApiKey] | None = None) -> None:
        self._keys = list(keys or [])  # configured: a handful, compared one by one in constant time
        self._stored: dict[str, ApiKey] = {}  # by key id, which the key text carries in clear
        self._used: set[str] = set()  # stored key ids seen since the last `take_used()`

    @classmethod
    def single(cls, secret: str | None) -> KeyRing:
        """The `--api-key` key: every scope."""
        if not secret:
            return cls()
        return cls([ApiKey(key_id_of(secret), hash_key(secret), frozenset(Scope))])

    def configure(self, api_key: str | None, keys: Iterable[ApiKey] = ()) -> None:
        """Replace the configured keys (`--api-key` and the config file's `security.api_keys`), at start-up and on
        a reload; the stored keys stay as they are."""
        self._keys = [*KeyRing.single(api_key)._keys, *keys]

    @property
    def has_stored(self) -> bool:
        return bool(self._stored)

    @property
    def open(self) -> bool:
        return not self._keys and not self._stored

    @property
    def has_admin(self) -> bool:
        """Some key can manage keys (once the ring is not open, this must stay true or admins are locked out)."""
        return any(Scope.ADMIN in key.scopes for key in (*self._keys, *self._stored.values()))

    def admins_besides(self, key_id: str) -> bool:
        """Whether an admin key other than the stored key `key_id` is accepted."""
        return any(Scope.ADMIN in k.scopes for k in self._keys) or any(
            Scope.ADMIN in k.scopes for k in self._stored.values() if k.key_id != key_id
        )

    def load_stored(self, keys: Iterable[ApiKey]) -> None:
        self._stored = {key.key_id: key for key in keys}

    def add_stored(self, key: ApiKey) -> None:
        self._stored[key.key_id] = key

    def discard_stored(self, key_id: str) -> None:
        """Revoked: refused from the next call on."""
        self._stored.pop(key_id, None)
        self._used.discard(key_id)

    def take_used(self) -> set[str]:
        """The stored keys that authenticated a call since the last time this was asked (for `last_used_at`)."""
        used, self._used = self._used, set()
        return used

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key a `Bearer <key>` header names; None when the ring is open. Raises when it names none."""
        if self.open:
            return None
        if not authorization:
            raise UnauthenticatedError("an API key is required: send `authorization: Bearer <key>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization header must be `Bearer <key>`")
        token = token.strip()
        if not token.isascii() or not token.isprintable():
            raise UnauthenticatedError("the API key is not valid")
        digest = hash_key(token)
        stored = self._stored.get(key_id_of(token))
        if stored is not None and hmac.compare_digest(stored.digest, digest):
            self._used.add(stored.key_id)
            return stored
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest):
                return key
        raise UnauthenticatedError("the API key is not valid")

    def authorize(self, authorization: str | None, scope: Scope) -> ApiKey | None:
        key = self.authenticate(authorization)
        if key is not None and not key.allows(scope):
            raise PermissionDeniedError(f"this key lacks the {scope.value!r} scope")
        return key
