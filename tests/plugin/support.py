"""Small real plugins for the plugin tests: each is registered on a fresh manager through `load_plugins(extra=...)`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from eventbus.model import Event
from eventbus.plugin import (
    Accepted,
    Connector,
    ConnectorRegistry,
    ConnectorResult,
    Delivery,
    Destination,
    DestinationContext,
    DestinationRegistry,
    DestinationResult,
    InboundRequest,
    Plugins,
    Refused,
    SourceConfig,
    hookimpl,
    load_plugins,
)

# No entry points: only the plugins a test hands over.
NO_AUTOLOAD = {"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}


def fresh(*plugins: object, **env: str) -> Plugins:
    """A fresh manager with just `plugins` (autoload off); dropped with the test, so nothing leaks."""
    return load_plugins(extra=plugins, env={**NO_AUTOLOAD, **env})


class EchoConnector:
    """Accepts any request carrying `X-Echo-Token: <a secret>`: one event holding the body."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return dict(options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        if request.header("x-echo-token") not in source.secrets:
            return Refused.unauthorized("X-Echo-Token does not match", field="X-Echo-Token")
        event = Event.create(
            type=f"{self.name}.received", source=source.event_source, id="d1", time=now, data=request.body
        )
        return Accepted([event], dedup_key="d1")


class CountingDestination:
    """Succeeds and remembers what it was handed."""

    def __init__(self, name: str = "counting") -> None:
        self.name = name
        self.delivered: list[Delivery] = []

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return dict(options)

    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        self.delivered.append(delivery)
        return DestinationResult.success(status_code=200)


class RegisteringPlugin:
    """A plugin adding the given connectors and destinations."""

    def __init__(
        self, name: str, *, connectors: tuple[Connector, ...] = (), destinations: tuple[Destination, ...] = ()
    ) -> None:
        self.__name__ = name
        self.contributed_connectors = connectors
        self.contributed_destinations = destinations

    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        for connector in self.contributed_connectors:
            registry.add(connector)

    @hookimpl
    def eventbus_register_destinations(self, registry: DestinationRegistry) -> None:
        for destination in self.contributed_destinations:
            registry.add(destination)
