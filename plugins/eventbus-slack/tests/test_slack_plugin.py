"""eventbus-slack registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_slack

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_slack_connector() -> None:
    plugins = load_plugins(extra=[eventbus_slack], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("slack")
    assert connector is not None
    assert connector.name == "slack"
    assert plugins.connectors().owner("slack") == "eventbus_slack"
    assert plugins.failures == {}
