"""eventbus-stripe: the `stripe` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_stripe.connector import StripeConnector

__all__ = ["StripeConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(StripeConnector())
