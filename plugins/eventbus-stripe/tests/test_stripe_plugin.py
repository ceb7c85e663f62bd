"""eventbus-stripe registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_stripe

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_stripe_connector() -> None:
    plugins = load_plugins(extra=[eventbus_stripe], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("stripe")
    assert connector is not None
    assert connector.name == "stripe"
    assert plugins.connectors().owner("stripe") == "eventbus_stripe"
    assert plugins.failures == {}
