"""Loading plugins (entry points, blocks, checks) and the typed façade the core calls them through."""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pluggy
import structlog

from eventbus.egress.client import EgressError
from eventbus.errors import (
    InvalidArgumentError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from eventbus.model import validate_event
from eventbus.plugin import NAME, hookspecs
from eventbus.plugin.connectors import (
    Accepted,
    Connector,
    ConnectorResult,
    CustomResponse,
    InboundRequest,
    Refused,
    SourceConfig,
)
from eventbus.plugin.destinations import Delivery, Destination, DestinationContext, DestinationResult
from eventbus.plugin.lifecycle import ServerContext
from eventbus.plugin.registry import ConnectorRegistry, DestinationRegistry, _Registry

__all__ = ["PluginFailure", "PluginInfo", "PluginLoadError", "Plugins", "load_plugins"]

log = structlog.get_logger("eventbus.plugin")

HOOKS: tuple[str, ...] = tuple(sorted(name for name in dir(hookspecs) if name.startswith("eventbus_")))
_FALSE = frozenset({"", "0", "false", "no", "off"})


class PluginLoadError(Exception):
    """A plugin cannot be loaded (import error, unknown hook, bad registration): the server does not start."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin as `eventbus plugins` lists it; `dist`/`version` are None when not from an entry point."""

    name: str
    version: str | None
    dist: str | None
    connectors: tuple[str, ...]
    destinations: tuple[str, ...]
    failures: int


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin call raised (or broke the contract); the caller answers with a clear error, and keeps serving."""

    plugin: str
    call: str  # the hook or method, e.g. `eventbus_startup`, `connector 'github'`
    error: str  # the exception's type and message

    @property
    def message(self) -> str:
        return f"plugin {self.plugin!r} failed in {self.call}: {self.error}"


def load_plugins(*, extra: Iterable[object] = (), env: Mapping[str, str] | None = None) -> Plugins:
    """A fresh plugin manager: the entry points of group `eventbus` (unless autoload is off), then `extra`.

    `EVENTBUS_DISABLE_PLUGINS=a,b` blocks plugins by name (entry-point names, or `extra`'s `__name__`);
    `EVENTBUS_DISABLE_PLUGIN_AUTOLOAD=1` skips the entry points. `env` defaults to `os.environ`. Raises
    `PluginLoadError` for a plugin that fails to import, implements an unknown hook or a wrapper.
    """
    env = os.environ if env is None else env
    manager = pluggy.PluginManager(NAME)
    manager.add_hookspecs(hookspecs)
    for name in env.get("EVENTBUS_DISABLE_PLUGINS", "").split(","):
        if name.strip():
            manager.set_blocked(name.strip())
    distributions: dict[str, importlib.metadata.Distribution] = {}
    if env.get("EVENTBUS_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _FALSE:
        distributions = _load_entry_points(manager)
    for plugin in extra:
        given = getattr(plugin, "__name__", None)
        _register(manager, plugin, given if isinstance(given, str) else type(plugin).__name__)
    _check_hooks(manager)
    return Plugins(manager, distributions)


def _load_entry_points(manager: pluggy.PluginManager) -> dict[str, importlib.metadata.Distribution]:
    loaded: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points.select(group=NAME):
            name = entry_point.name
            if manager.is_blocked(name):
                continue
            if name in loaded:
                if loaded[name].name == dist.name:
                    continue  # the same distribution seen twice on sys.path: the first one wins, as for imports
                raise PluginLoadError(
                    f"plugin {name!r} is declared by two distributions, {loaded[name].name} and {dist.name}; "
                    "uninstall one (or set EVENTBUS_DISABLE_PLUGINS)"
                )
            try:
                plugin = entry_point.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {name!r} ({dist.name} {dist.version}) failed to import {entry_point.value!r}: "
                    f"{type(exc).__name__}: {exc} (set EVENTBUS_DISABLE_PLUGINS={name} to start without it)"
                ) from exc
            _register(manager, plugin, name)
            loaded[name] = dist
    return loaded


def _register(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        manager.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginLoadError(f"plugin {name!r} cannot be registered: {exc}") from exc


def _check_hooks(manager: pluggy.PluginManager) -> None:
    """Fail fast (tox's check_pending): misspelt hooks, hooks without @hookimpl, wrappers."""
    for name, plugin in manager.list_name_plugin():
        if plugin is None:  # blocked
            continue
        for attribute in dir(plugin):
            if attribute.startswith("eventbus_") and attribute not in HOOKS:
                raise PluginLoadError(
                    f"plugin {name!r} implements unknown hook {attribute!r}{_did_you_mean(attribute)}"
                )
            if attribute in HOOKS and not any(
                impl.plugin is plugin for impl in getattr(manager.hook, attribute).get_hookimpls()
            ):
                raise PluginLoadError(
                    f"plugin {name!r} defines {attribute}() without @hookimpl "
                    "(from eventbus.plugin import hookimpl), so it would never be called"
                )
        for caller in manager.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                raise PluginLoadError(
                    f"plugin {name!r} implements unknown hook {caller.name!r}{_did_you_mean(caller.name)}"
                )
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    raise PluginLoadError(
                        f"plugin {name!r}: {caller.name} cannot be a wrapper (eventbus calls each implementation on "
                        "its own so that one failing does not stop the others)"
                    )
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(str(exc)) from exc


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, HOOKS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (the hooks are: {', '.join(HOOKS)})"


class Plugins:
    """The typed façade over the plugin manager: one method per hook, and contained calls into plugin code.

    Register hooks run once, on first use; their results are cached. Every failure is logged as
    `plugin_failed` and counted in `failures`.
    """

    def __init__(
        self, manager: pluggy.PluginManager, distributions: Mapping[str, importlib.metadata.Distribution]
    ) -> None:
        self.manager = manager
        self._distributions = dict(distributions)
        self._failures: Counter[str] = Counter()
        self._failures_by_hook: Counter[tuple[str, str]] = Counter()  # (plugin, hook or `connector`/`destination`)
        self._connectors: ConnectorRegistry | None = None
        self._destinations: DestinationRegistry | None = None
        self._context: ServerContext | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The loaded plugins' names, sorted (blocked ones excluded)."""
        return tuple(sorted(name for name, plugin in self.manager.list_name_plugin() if plugin is not None))

    @property
    def failures(self) -> Mapping[str, int]:
        """Failures so far per plugin name (hooks that raised, and contained connector/destination calls)."""
        return dict(self._failures)

    @property
    def failures_by_hook(self) -> Mapping[tuple[str, str], int]:
        """Failures so far per (plugin, hook): a hook name, or `connector`, `destination`, `handle`, `response`
        for the contained calls (`/metrics` serves them as `eventbus_plugin_errors_total`)."""
        return dict(self._failures_by_hook)

    def connectors(self) -> ConnectorRegistry:
        """Every plugin's connectors: `eventbus_register_connectors` runs on the first call."""
        if self._connectors is None:
            self._connectors = ConnectorRegistry()
            self._fill(self._connectors, "eventbus_register_connectors")
        return self._connectors

    def destinations(self) -> DestinationRegistry:
        """Every plugin's destination kinds: `eventbus_register_destinations` runs on the first call."""
        if self._destinations is None:
            self._destinations = DestinationRegistry()
            self._fill(self._destinations, "eventbus_register_destinations")
        return self._destinations

    async def startup(self, context: ServerContext) -> None:
        """Run the register hooks (if not yet), then `eventbus_startup`, each implementation in turn."""
        self.connectors()
        self.destinations()
        self._context = context
        for impl in self._implementations("eventbus_startup"):
            await self._run_lifecycle(impl, "eventbus_startup", context)

    async def shutdown(self) -> None:
        """Run `eventbus_shutdown` in the reverse order of startup; does nothing if `startup` never ran."""
        context, self._context = self._context, None
        if context is None:
            return
        for impl in reversed(self._implementations("eventbus_shutdown")):
            await self._run_lifecycle(impl, "eventbus_shutdown", context)

    def info(self) -> list[PluginInfo]:
        """The loaded plugins with their distribution, version, contributions and failure count."""
        connectors, destinations = self.connectors(), self.destinations()
        rows = []
        for name in self.names:
            dist = self._distributions.get(name)
            rows.append(
                PluginInfo(
                    name=name,
                    version=dist.version if dist else None,
                    dist=dist.name if dist else None,
                    connectors=connectors.of_plugin(name),
                    destinations=destinations.of_plugin(name),
                    failures=self._failures[name],
                )
            )
        return rows

    async def call_connector(
        self, connector: Connector, request: InboundRequest, source: SourceConfig, now: datetime
    ) -> ConnectorResult | PluginFailure:
        """`connector.handle(...)`, contained.

        The sender's fault becomes `Refused`: `InvalidArgumentError` raised or found in the returned events (400;
        413 for `PayloadTooLargeError`), `UnauthenticatedError` (401, e.g. from `verify_standard_webhook`),
        `PermissionDeniedError` (403). Any other exception, a result of the wrong
        type, or events outside the naming rules (`source` = `/hooks/<source>`, `type` = `<connector>.…`) are
        the connector's fault: logged, counted, and returned as a `PluginFailure`.
        """
        call = f"connector {connector.name!r}"
        try:
            result = await connector.handle(request, source, now)
            if not isinstance(result, Accepted | Refused | CustomResponse):
                raise TypeError(f"handle() returned {type(result).__name__}, not Accepted, Refused or CustomResponse")
            if isinstance(result, Accepted):
                _check_events(result, connector.name, source)
        except (InvalidArgumentError, UnauthenticatedError, PermissionDeniedError) as exc:
            return Refused(_refusal_status(exc), exc.message)
        except Exception as exc:
            return self._failed(self.connectors().owner(connector.name), call, exc)
        return result

    async def call_destination(
        self, destination: Destination, delivery: Delivery, context: DestinationContext
    ) -> DestinationResult | PluginFailure:
        """`destination.deliver(...)`, contained: an exception or a wrong result is logged, counted, returned."""
        call = f"destination {destination.name!r}"
        try:
            result = await destination.deliver(delivery, context)
            if not isinstance(result, DestinationResult):
                raise TypeError(f"deliver() returned {type(result).__name__}, not DestinationResult")
        except EgressError as exc:  # no HTTP answer from `context.request`: the receiver's failure, not a bug
            return DestinationResult.retry(exc.message, error_class=exc.error_class)
        except Exception as exc:
            return self._failed(self.destinations().owner(destination.name), call, exc)
        return result

    def _implementations(self, hook: str) -> list[pluggy.HookImpl]:
        # pluggy calls the last of get_hookimpls() first. We call each implementation ourselves, in that same
        # order, because pluggy stops a hook call at the first exception and containment must not.
        caller: pluggy.HookCaller = getattr(self.manager.hook, hook)
        return list(reversed(caller.get_hookimpls()))

    def _fill(self, registry: _Registry[Any], hook: str) -> None:
        for impl in self._implementations(hook):
            registry._begin(impl.plugin_name)
            failed = True
            try:
                result = _call(impl, registry=registry)
                if result is not None:
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: say why instead of warning about it
                    raise TypeError(f"{hook} must be synchronous and return None (call registry.add)")
                failed = False
            except Exception as exc:
                self._failed(impl.plugin_name, hook, exc)
            finally:
                registry._end(failed=failed)
        registry._seal()

    async def _run_lifecycle(self, impl: pluggy.HookImpl, hook: str, context: ServerContext) -> None:
        try:
            result = _call(impl, context=context)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._failed(impl.plugin_name, hook, exc)

    def record_failure(self, plugin: str | None, call: str, exc: Exception) -> PluginFailure:
        """Log and count a failure of plugin code found outside the contained calls (e.g. a response it built)."""
        return self._failed(plugin, call, exc)

    def _failed(self, plugin: str | None, call: str, exc: Exception) -> PluginFailure:
        failure = PluginFailure(plugin or "(unknown)", call, f"{type(exc).__name__}: {exc}")
        self._failures[failure.plugin] += 1
        self._failures_by_hook[(failure.plugin, call.split(" ", 1)[0])] += 1  # a kind of call, never a name
        log.error("plugin_failed", plugin=failure.plugin, hook=call, error=failure.error, exc_info=exc)
        return failure


def _call(impl: pluggy.HookImpl, **arguments: object) -> object:
    """Call one implementation with the arguments it names, as pluggy does."""
    return impl.function(*[arguments[name] for name in impl.argnames])


def _refusal_status(exc: InvalidArgumentError | UnauthenticatedError | PermissionDeniedError) -> int:
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, InvalidArgumentError):
        return 400
    return 401 if isinstance(exc, UnauthenticatedError) else 403


def _check_events(result: Accepted, connector: str, source: SourceConfig) -> None:
    for index, event in enumerate(result.events):
        if event.source != source.event_source:
            raise ValueError(f"events[{index}].source is {event.source!r}; it must be {source.event_source!r}")
        if not event.type.startswith(f"{connector}."):
            raise ValueError(f"events[{index}].type is {event.type!r}; it must start with {connector + '.'!r}")
        try:
            validate_event(event)
        except PayloadTooLargeError:
            raise
        except InvalidArgumentError as exc:
            raise exc.prefixed(f"events[{index}]") from None
