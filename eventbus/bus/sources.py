"""Inbound sources: create, change, rotate, enable/disable and delete the receivers behind `/hooks/{name}`.

The one place these rules live: gRPC `Admin`, the CLI and the REST API all call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog

from eventbus.bus.service import Bus
from eventbus.errors import ConcurrentUpdateError, InvalidArgumentError, NotFoundError
from eventbus.ids import is_id
from eventbus.plugin.registry import ConnectorRegistry
from eventbus.signing import generate_secret
from eventbus.store.managed import refuse_if_managed
from eventbus.store.sources import Source, SourceSecret, SourceSpec, SourceStore

log = structlog.get_logger("eventbus.sources")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ROTATION_GRACE = timedelta(hours=24)
MAX_SECRETS = 2
CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class SourceInput:
    """A new source, or (for `update`) what to change: None leaves a setting as it is."""

    name: str = ""
    connector: str = ""
    secrets: Sequence[str] | None = None
    options: Mapping[str, object] | None = None
    enabled: bool | None = None
    rate_limit: float | None = None  # 0 removes the limit on update


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """A source as shown: never its secrets, except `revealed` once on create or rotate."""

    source: Source
    revealed: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"/hooks/{self.source.name}"


def _check_secrets(secrets: Sequence[str]) -> tuple[SourceSecret, ...]:
    if len(secrets) > MAX_SECRETS:
        raise InvalidArgumentError.for_field(
            "secrets", f"at most {MAX_SECRETS} (the current one and, in a rotation, the previous)"
        )
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str) or not secret or len(secret) > 1024 or any(c in secret for c in "\r\n\0"):
            raise InvalidArgumentError.for_field(f"secrets[{index}]", "1-1024 characters, no CR, LF or NUL")
    return tuple(SourceSecret(s) for s in secrets)


def _check_rate(rate: float | None) -> None:
    if rate is not None and not 0 <= rate <= 100_000:
        raise InvalidArgumentError.for_field("rate_limit", "requests per second, up to 100000 (0: no limit)")


class Sources:
    """The service layer for inbound sources."""

    def __init__(self, bus: Bus, store: SourceStore, connectors: ConnectorRegistry) -> None:
        self.bus = bus
        self.store = store
        self.connectors = connectors
        self.changed: list[Callable[[str], None]] = []  # told the name of every source created, changed or deleted

    def _changed(self, name: str) -> None:
        for listener in self.changed:
            listener(name)

    def _validate_options(self, connector: str, options: Mapping[str, object]) -> dict[str, object]:
        found = self.connectors.get(connector)
        if found is None:
            known = ", ".join(self.connectors.names) or "none: install a connector plugin"
            raise InvalidArgumentError.for_field("connector", f"unknown connector {connector!r}; known: {known}")
        try:
            return dict(found.validate_options(dict(options)))
        except InvalidArgumentError:
            raise
        except Exception as exc:  # a plugin's own bug is not the caller's bad input
            raise InvalidArgumentError.for_field("options", f"connector {connector!r} refused them: {exc}") from exc

    def _check_connector_secrets(self, connector: str, secrets: Sequence[str]) -> None:
        """A connector may say which secrets it can use (`validate_secrets`): refused now, not at every delivery."""
        found = self.connectors.get(connector)
        check = getattr(found, "validate_secrets", None)
        if check is None:
            return
        try:
            check(list(secrets))
        except InvalidArgumentError:
            raise
        except Exception as exc:
            raise InvalidArgumentError.for_field("secrets", f"connector {connector!r} refused them: {exc}") from exc

    def _new_secret(self, connector: str) -> str:
        """A generated secret, in the connector's own form when it has one (`generate_secret`), e.g. URL-safe."""
        make = getattr(self.connectors.get(connector), "generate_secret", None)
        if make is None:
            return generate_secret()
        try:
            secret = make()
        except Exception as exc:
            raise InvalidArgumentError.for_field("secrets", f"connector {connector!r} cannot make one: {exc}") from exc
        if not isinstance(secret, str) or not secret:
            raise InvalidArgumentError.for_field("secrets", f"connector {connector!r} made no secret: give one")
        return secret

    async def find(self, ref: str) -> Source:
        """By `src_` id or by name."""
        found = await self.store.get_source(ref) if is_id(ref, "src") else await self.store.find_source(ref)
        if found is None:
            raise NotFoundError(f"source {ref!r} does not exist")
        return found

    def prepare(self, spec: SourceInput) -> SourceSpec:
        """Every check `create` makes, storing nothing: the config file validates a replacement before the source
        it replaces goes. A source given no secret gets a generated one."""
        if not _NAME.match(spec.name):
            raise InvalidArgumentError.for_field(
                "name", "1-63 characters of [a-z0-9_-], starting with a letter or digit"
            )
        options = self._validate_options(spec.connector, spec.options or {})
        _check_rate(spec.rate_limit)
        secrets = list(spec.secrets or []) or [self._new_secret(spec.connector)]
        checked = _check_secrets(secrets)
        self._check_connector_secrets(spec.connector, secrets)
        return SourceSpec(
            name=spec.name,
            connector=spec.connector,
            secrets=checked,
            options=options,
            enabled=spec.enabled if spec.enabled is not None else True,
            rate_limit=spec.rate_limit or None,
        )

    async def create(self, spec: SourceInput) -> SourceInfo:
        prepared = self.prepare(spec)
        source = await self.store.create_source(prepared, now=self.bus.clock.now())
        self._changed(source.name)
        log.info("source_created", source=source.name, connector=source.connector, source_id=source.id)
        return SourceInfo(source, tuple(s.secret for s in prepared.secrets) if not spec.secrets else ())

    async def get(self, ref: str) -> SourceInfo:
        return SourceInfo(await self.find(ref))

    async def list_page(self, *, page_size: int = 100, page_token: str = "") -> tuple[list[SourceInfo], str]:
        if not 0 <= page_size <= 1000:
            raise InvalidArgumentError.for_field("page_size", "must be between 1 and 1000 (0 means 100)")
        if page_token and not is_id(page_token, "src"):
            raise InvalidArgumentError.for_field("page_token", "not a token this server issued")
        size = page_size or 100
        found = await self.store.list_sources(after_id=page_token, limit=size + 1)
        page = found[:size]
        return [SourceInfo(s) for s in page], (page[-1].id if len(found) > size else "")

    async def update(self, ref: str, spec: SourceInput, *, declared: bool = False) -> SourceInfo:
        """Change what is given. A source the config file manages changes only through the file (`declared`, whose
        options replace the current ones), except `enabled`: an operator may switch it off and on."""
        _check_rate(spec.rate_limit)
        if not declared and (spec.options, spec.secrets, spec.rate_limit) != (None, None, None):
            await refuse_if_managed(self.store, (await self.find(ref)).id, "change")
        for attempt in range(CONFLICT_RETRIES):
            source = await self.find(ref)
            changes: dict[str, object] = {}
            if spec.options is not None:
                given = dict(spec.options) if declared else {**source.options, **spec.options}
                changes["options"] = self._validate_options(source.connector, given)
            if spec.secrets is not None:
                changes["secrets"] = _check_secrets(spec.secrets)
                self._check_connector_secrets(source.connector, spec.secrets)
            if spec.enabled is not None:
                changes["enabled"] = spec.enabled
            if spec.rate_limit is not None:
                changes["rate_limit"] = spec.rate_limit or None
            try:
                updated = await self.store.update_source(
                    source.id, changes, now=self.bus.clock.now(), if_updated_at=source.updated_at
                )
            except ConcurrentUpdateError:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                continue
            self._changed(updated.name)
            log.info("source_updated", source=updated.name, changed=sorted(changes))
            return SourceInfo(updated)
        raise AssertionError("unreachable")

    async def rotate_secret(self, ref: str, new_secret: str | None = None) -> SourceInfo:
        """A new secret verifies from now on; the current one keeps verifying for 24 h (senders switch over)."""
        found = await self.find(ref)
        await refuse_if_managed(self.store, found.id, "rotate its secret")
        connector = found.connector
        secret = new_secret or self._new_secret(connector)
        _check_secrets([secret])
        self._check_connector_secrets(connector, [secret])
        for attempt in range(CONFLICT_RETRIES):
            source = await self.find(ref)
            now = self.bus.clock.now()
            current = [s for s in source.secrets if s.expires_at is None][:1]
            keep = [SourceSecret(s.secret, now + ROTATION_GRACE) for s in current]
            secrets = (SourceSecret(secret), *keep)
            try:
                updated = await self.store.update_source(
                    source.id, {"secrets": secrets}, now=now, if_updated_at=source.updated_at
                )
            except ConcurrentUpdateError:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                continue
            self._changed(updated.name)
            log.info("source_secret_rotated", source=updated.name)
            return SourceInfo(updated, (secret,))
        raise AssertionError("unreachable")

    async def delete(self, ref: str, *, declared: bool = False) -> None:
        source = await self.find(ref)
        if not declared:
            await refuse_if_managed(self.store, source.id, "be deleted")
        await self.store.delete_source(source.id, now=self.bus.clock.now())
        self._changed(source.name)
        log.info("source_deleted", source=source.name, source_id=source.id)
