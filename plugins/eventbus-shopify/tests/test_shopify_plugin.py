"""eventbus-shopify registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_shopify

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_shopify_connector() -> None:
    plugins = load_plugins(extra=[eventbus_shopify], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("shopify")
    assert connector is not None
    assert connector.name == "shopify"
    assert plugins.connectors().owner("shopify") == "eventbus_shopify"
    assert plugins.failures == {}
