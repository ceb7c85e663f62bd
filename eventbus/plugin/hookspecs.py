"""The plugin contract: every hook eventbus calls, when it calls it, and what it expects back.

Rules shared by every hook:

- Names start with `eventbus_`; a plugin attribute with that prefix that is not a hook below (a misspelling)
  or is not decorated with `@hookimpl` stops loading with a clear error.
- An implementation may accept any subset of a hook's parameters (pluggy passes the ones it names).
- No hook is `firstresult`: every implementation runs, in pluggy's order (last registered first; `tryfirst` and
  `trylast` adjust it). Wrappers (`wrapper=True`, `hookwrapper=True`) are refused at load: each implementation
  is called on its own so that one failing does not stop the others.
- Containment: an implementation that raises is logged (`plugin_failed`, with `plugin` and `hook`) and
  counted against its plugin (`Plugins.failures`); the other implementations still run and the server keeps
  starting (or stopping).

See docs/plugins.md for the guide and a worked example.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from eventbus.plugin import hookspec

if TYPE_CHECKING:
    from eventbus.plugin.lifecycle import ServerContext
    from eventbus.plugin.registry import ConnectorRegistry, DestinationRegistry

__all__ = [
    "eventbus_register_connectors",
    "eventbus_register_destinations",
    "eventbus_shutdown",
    "eventbus_startup",
]


@hookspec
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    """Add inbound connectors (verifiers and parsers of provider webhooks) with `registry.add(connector)`.

    Runs once per process, the first time the connectors are needed (at server start, or by
    `eventbus plugins`), before `eventbus_startup`. Must be synchronous and return nothing.

    A connector name already registered (by this or another plugin) is refused with `DuplicateNameError`
    naming both plugins. If the implementation raises, everything it added is withdrawn: a failing plugin
    contributes no connector, and the sources that use its connectors answer with a clear error.

    :param registry: where to add connectors; it accepts additions only while this hook runs.
    """


@hookspec
def eventbus_register_destinations(registry: DestinationRegistry) -> None:
    """Add outbound destination kinds (what a subscription's `kind` names) with `registry.add(destination)`.

    Runs once per process, the first time the destinations are needed, before `eventbus_startup`. Must be
    synchronous and return nothing. The names `webhook` and `grpc` are built in and refused, as is a name
    already registered (`DuplicateNameError` naming both plugins). If the implementation raises, everything it
    added is withdrawn.

    :param registry: where to add destinations; it accepts additions only while this hook runs.
    """


@hookspec
def eventbus_startup(context: ServerContext) -> Awaitable[None] | None:
    """The server is starting: open what the plugin needs (clients, caches) before traffic arrives.

    Runs once, after the store is open and the register hooks have run, before the server accepts requests.
    May be `async def` (or return an awaitable): the server awaits each implementation in turn, so keep it
    short. Raising is contained: logged, counted, and the server starts anyway.

    :param context: the process's shared resources (the SSRF-guarded HTTP session, the clock).
    """


@hookspec
def eventbus_shutdown(context: ServerContext) -> Awaitable[None] | None:
    """The server is stopping: close what `eventbus_startup` opened.

    Runs once, after the server has stopped accepting requests and in-flight work has finished, in the reverse
    order of startup, for every plugin that implements it (also when its startup failed, so it can clean up
    half-opened state). May be `async def`. Raising is contained: logged, counted, and shutdown continues.

    :param context: the same object `eventbus_startup` received.
    """
