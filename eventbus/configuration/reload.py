"""Settings applied to a running server: the file's declarations at start-up, and a reload on SIGHUP.

A reload reads the flags, the environment and the file again (same precedence as at start-up). What can change
live is applied; what needs a restart (listen addresses, store, TLS files...) is kept as it runs and named in one
log line; a file that is refused changes nothing, and its errors are logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from eventbus.configuration.declared import ApplyReport, DeclaredResources
from eventbus.configuration.file import ConfigFileError
from eventbus.configuration.values import SETTINGS
from eventbus.errors import InvalidArgumentError
from eventbus.logs import configure_logging
from eventbus.store.managed import ManagedStore

if TYPE_CHECKING:
    from eventbus.config import ServerSettings
    from eventbus.runtime import EventBusServer

log = structlog.get_logger("eventbus.config")
API_KEYS = "security.api_keys"
DECLARATIONS = "sources/subscriptions"


@dataclass(slots=True)
class ReloadOutcome:
    """What a reload did: settings applied live and needing a restart (file paths), and why it was refused."""

    applied: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    declared: ApplyReport | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class Reloader:
    """Owned by `EventBusServer`; `read` gives fresh settings (by default the running ones again)."""

    def __init__(self, server: EventBusServer, read: Callable[[], ServerSettings] | None) -> None:
        self.server = server
        self.read = read or (lambda: server.settings)
        self._lock = asyncio.Lock()  # one reload at a time: two quick SIGHUPs apply one after the other
        store = server.store
        self.declared = DeclaredResources(server.services, store) if isinstance(store, ManagedStore) else None

    async def apply_at_start(self) -> None:
        """Create, change or remove what the file declares; a declaration the services refuse stops the start."""
        settings = self.server.settings
        if self.declared is None or not settings.config_file:
            # No file, no reconciling: starting once without `--config` must not delete what a file declared.
            return
        report = await self.declared.apply(settings.declarations)
        if report.errors:
            raise ConfigFileError(settings.config_file, report.errors)

    async def reload(self) -> ReloadOutcome:
        async with self._lock:
            try:
                return await self._reload()
            except Exception as exc:  # a bug or a store failure: logged here, not an unretrieved task exception
                log.exception("config_reload_failed", error=f"{type(exc).__name__}: {exc}")
                return ReloadOutcome(errors=[f"the reload failed: {type(exc).__name__}: {exc}"])

    async def _reload(self) -> ReloadOutcome:
        try:
            fresh = self.read()
        except InvalidArgumentError as exc:
            errors = exc.errors if isinstance(exc, ConfigFileError) else [exc.message]
            log.error("config_reload_refused", errors=errors, kept="the running configuration")
            return ReloadOutcome(errors=errors)
        return await self._apply(fresh)

    async def _apply(self, fresh: ServerSettings) -> ReloadOutcome:
        server, old = self.server, self.server.settings
        outcome = ReloadOutcome()
        changed = [s for s in SETTINGS if getattr(old, s.name) != getattr(fresh, s.name)]
        outcome.restart_needed = [s.path for s in changed if not s.live]
        # What runs keeps the values that need a restart, so the next reload compares with what really runs.
        effective = replace(fresh, **{s.name: getattr(old, s.name) for s in changed if not s.live})
        try:
            effective.check_exposure(stored_keys=server.keys.has_stored)
        except InvalidArgumentError as exc:
            outcome.errors = [exc.message]
            log.error("config_reload_refused", errors=outcome.errors, kept="the running configuration")
            return outcome
        live = {s.name for s in changed if s.live}
        if live & {"log_level", "log_format"}:
            configure_logging(effective.log_format, effective.log_level)
        if "hooks_body_limit" in live and server.hooks is not None:
            server.hooks.body_limit = effective.hooks_body_limit
        if "allow_destinations" in live:
            server.policy.allow = effective.allow_destinations
            server.egress.drop_pooled()  # a kept-alive connection must not outlive the allowlist entry it passed
        bus_changes = {name: getattr(effective, name) for name in live & {"retention", "retry_schedule"}}
        if "max_pending_age" in live:
            bus_changes["max_pending_age"] = effective.max_pending_age
        if bus_changes:
            server.bus.settings = replace(server.bus.settings, **bus_changes)
        outcome.applied = [s.path for s in changed if s.live]
        if (old.api_key, old.config_keys) != (effective.api_key, effective.config_keys):
            server.keys.configure(effective.api_key, effective.config_keys)
            outcome.applied.append(API_KEYS)
        server.settings = effective
        if self.declared is not None and effective.config_file:
            outcome.declared = await self.declared.apply(effective.declarations)
            if outcome.declared.created or outcome.declared.updated or outcome.declared.removed:
                outcome.applied.append(DECLARATIONS)
            outcome.errors = [f"{v.field}: {v.detail}" for v in outcome.declared.errors]
        log.info("config_reloaded", applied=outcome.applied, errors=outcome.errors)
        if outcome.restart_needed:
            log.warning("config_restart_needed", settings=outcome.restart_needed)
        return outcome
