"""eventbus-standardwebhooks: the `standardwebhooks` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_standardwebhooks.connector import StandardWebhooksConnector

__all__ = ["StandardWebhooksConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(StandardWebhooksConnector())
