"""The registries the register hooks fill: connectors and destination kinds by name, each with its plugin."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import ClassVar, Generic, TypeVar

from eventbus.plugin.connectors import Connector
from eventbus.plugin.destinations import Destination

__all__ = ["ConnectorRegistry", "DestinationRegistry", "DuplicateNameError"]

# A connector's name starts its event types (`github.push`), a destination's is a subscription kind.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_UNKNOWN_PLUGIN = "(unknown)"

T = TypeVar("T")


class DuplicateNameError(ValueError):
    """A second connector (or destination) under a name already taken; the message names both plugins."""

    def __init__(self, what: str, name: str, plugin: str, taken_by: str) -> None:
        super().__init__(
            f"{what} {name!r} from plugin {plugin!r} is refused: plugin {taken_by!r} already registered {what} "
            f"{name!r} (disable one of them with EVENTBUS_DISABLE_PLUGINS)"
        )
        self.name = name
        self.plugin = plugin
        self.taken_by = taken_by


class _Registry(Generic[T]):
    """Names to contributions; filled only while the register hook runs, read-only after."""

    what: ClassVar[str]
    reserved: ClassVar[frozenset[str]] = frozenset()
    async_method: ClassVar[str]

    def __init__(self) -> None:
        self._entries: dict[str, tuple[T, str]] = {}
        self._plugin: str | None = None
        self._sealed = False

    def add(self, item: T) -> None:
        """Register `item` under `item.name`; raises `DuplicateNameError` if the name is taken."""
        if self._sealed:
            raise RuntimeError(f"{self.what}s can be added only from the register hook, not later")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.what} name {name!r} is invalid: a lowercase letter, then up to 62 of [a-z0-9_-]")
        if name in self.reserved:
            raise ValueError(f"{self.what} name {name!r} is built in and cannot be registered by a plugin")
        for method in ("validate_options", self.async_method):
            if not callable(getattr(item, method, None)):
                raise TypeError(f"{self.what} {name!r} has no {method}() method")
        if not inspect.iscoroutinefunction(getattr(item, self.async_method)):
            raise TypeError(f"{self.what} {name!r}: {self.async_method}() must be `async def`")
        plugin = self._plugin or _UNKNOWN_PLUGIN
        if name in self._entries:
            raise DuplicateNameError(self.what, name, plugin, self._entries[name][1])
        self._entries[name] = (item, plugin)

    def get(self, name: str) -> T | None:
        """The contribution named `name`, or None."""
        entry = self._entries.get(name)
        return entry[0] if entry else None

    def owner(self, name: str) -> str | None:
        """The name of the plugin that registered `name`, or None."""
        entry = self._entries.get(name)
        return entry[1] if entry else None

    def of_plugin(self, plugin: str) -> tuple[str, ...]:
        """The names `plugin` registered, sorted."""
        return tuple(sorted(name for name, (_, owner) in self._entries.items() if owner == plugin))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._entries)

    # For the loader (eventbus.plugin.manager), which runs each plugin's hook between these calls.
    def _begin(self, plugin: str) -> None:
        self._plugin = plugin

    def _end(self, *, failed: bool) -> None:
        """Close the plugin's turn; when its hook failed, withdraw what it added (it contributes nothing)."""
        if failed and self._plugin is not None:
            plugin = self._plugin
            self._entries = {name: entry for name, entry in self._entries.items() if entry[1] != plugin}
        self._plugin = None

    def _seal(self) -> None:
        self._sealed = True


class ConnectorRegistry(_Registry[Connector]):
    """Inbound connectors by name; `eventbus_register_connectors` receives it."""

    what = "connector"
    async_method = "handle"


class DestinationRegistry(_Registry[Destination]):
    """Outbound destination kinds by name; `eventbus_register_destinations` receives it."""

    what = "destination"
    reserved = frozenset({"webhook", "grpc"})
    async_method = "deliver"
