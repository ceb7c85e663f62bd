"""eventbus-shopify: the `shopify` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_shopify.connector import ShopifyConnector

__all__ = ["ShopifyConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(ShopifyConnector())
