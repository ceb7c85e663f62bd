"""eventbus-hmac registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_hmac

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_hmac_connector() -> None:
    plugins = load_plugins(extra=[eventbus_hmac], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("hmac")
    assert connector is not None
    assert connector.name == "hmac"
    assert plugins.connectors().owner("hmac") == "eventbus_hmac"
    assert plugins.failures == {}
