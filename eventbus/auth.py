"""API keys: `ebk_<key id>_<secret>`, kept only as `sha256:<hex>`, each with scopes (admin implies all)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from eventbus.errors import PermissionDeniedError, UnauthenticatedError


class Scope(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ADMIN = "admin"


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
    return f"key_{parts[1]}" if len(parts) >= 3 and parts[0] == "ebk" and parts[1] else "key_cli"


class KeyRing:
    """The keys the server accepts. Empty: the server is open (and refuses to listen beyond loopback)."""

    def __init__(self, keys: list[ApiKey] | None = None) -> None:
        self._keys = list(keys or [])

    @classmethod
    def single(cls, secret: str | None) -> KeyRing:
        """The `--api-key` key: every scope."""
        if not secret:
            return cls()
        return cls([ApiKey(key_id_of(secret), hash_key(secret), frozenset(Scope))])

    @property
    def open(self) -> bool:
        return not self._keys

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key a `Bearer <key>` header names; None when the ring is open. Raises when it names none."""
        if self.open:
            return None
        if not authorization:
            raise UnauthenticatedError("an API key is required: send `authorization: Bearer <key>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization header must be `Bearer <key>`")
        digest = hash_key(token.strip())
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest):
                return key
        raise UnauthenticatedError("the API key is not valid")

    def authorize(self, authorization: str | None, scope: Scope) -> ApiKey | None:
        key = self.authenticate(authorization)
        if key is not None and not key.allows(scope):
            raise PermissionDeniedError(f"this key lacks the {scope.value!r} scope")
        return key
