"""eventbus-standardwebhooks registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_standardwebhooks

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_standardwebhooks_connector() -> None:
    plugins = load_plugins(extra=[eventbus_standardwebhooks], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("standardwebhooks")
    assert connector is not None
    assert connector.name == "standardwebhooks"
    assert plugins.connectors().owner("standardwebhooks") == "eventbus_standardwebhooks"
    assert plugins.failures == {}
