"""eventbus-slack: the `slack` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_slack.connector import SlackConnector

__all__ = ["SlackConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(SlackConnector())
