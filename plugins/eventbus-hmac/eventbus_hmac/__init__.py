"""eventbus-hmac: the generic `hmac` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_hmac.connector import HmacConnector

__all__ = ["HmacConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(HmacConnector())
