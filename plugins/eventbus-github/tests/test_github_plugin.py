"""eventbus-github registers its connector through the plugin hook, on a fresh manager."""

from __future__ import annotations

import eventbus_github

from eventbus.plugin import load_plugins


def test_the_plugin_registers_the_github_connector() -> None:
    plugins = load_plugins(extra=[eventbus_github], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    connector = plugins.connectors().get("github")
    assert connector is not None
    assert connector.name == "github"
    assert plugins.connectors().owner("github") == "eventbus_github"
    assert plugins.failures == {}
