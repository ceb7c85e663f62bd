"""Loading plugins on a fresh manager: blocks, fail-fast hook checks, registries and duplicate names."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from eventbus.plugin import (
    ConnectorRegistry,
    DestinationRegistry,
    DuplicateNameError,
    PluginLoadError,
    hookimpl,
    load_plugins,
)
from tests.plugin.support import CountingDestination, EchoConnector, RegisteringPlugin, fresh


def test_extra_plugins_contribute_connectors_and_destinations() -> None:
    plugins = fresh(
        RegisteringPlugin("acme", connectors=(EchoConnector("acme"),), destinations=(CountingDestination("queue"),))
    )

    assert plugins.names == ("acme",)
    assert plugins.connectors().names == ("acme",)
    assert plugins.connectors().owner("acme") == "acme"
    assert plugins.destinations().names == ("queue",)
    [info] = plugins.info()
    assert (info.name, info.version, info.dist, info.connectors, info.destinations, info.failures) == (
        "acme",
        None,
        None,
        ("acme",),
        ("queue",),
        0,
    )


def test_disable_plugins_blocks_by_name() -> None:
    plugins = fresh(
        RegisteringPlugin("one", connectors=(EchoConnector("one"),)),
        RegisteringPlugin("two", connectors=(EchoConnector("two"),)),
        EVENTBUS_DISABLE_PLUGINS="two, other",
    )
    assert plugins.names == ("one",)
    assert plugins.connectors().names == ("one",)


def test_a_misspelt_hook_fails_at_load_with_a_suggestion() -> None:
    class Misspelt:
        __name__ = "misspelt"

        @hookimpl
        def eventbus_register_conectors(self, registry: ConnectorRegistry) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginLoadError) as caught:
        fresh(Misspelt())
    message = str(caught.value)
    assert "plugin 'misspelt' implements unknown hook 'eventbus_register_conectors'" in message
    assert "did you mean 'eventbus_register_connectors'?" in message


def test_an_unknown_specname_is_caught_by_check_pending() -> None:
    class Renamed:
        __name__ = "renamed"

        @hookimpl(specname="eventbus_startp")
        def start(self) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginLoadError, match=r"unknown hook 'eventbus_startp'.*did you mean 'eventbus_startup'"):
        fresh(Renamed())


def test_a_hook_without_hookimpl_fails_at_load() -> None:
    class Undecorated:
        __name__ = "undecorated"

        def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginLoadError, match=r"eventbus_register_connectors\(\) without @hookimpl"):
        fresh(Undecorated())


def test_wrappers_are_refused() -> None:
    class Wrapper:
        __name__ = "wrapper"

        @hookimpl(wrapper=True)
        def eventbus_register_destinations(self, registry: DestinationRegistry) -> object:
            return (yield)

    with pytest.raises(PluginLoadError, match="cannot be a wrapper"):
        fresh(Wrapper())


def test_an_argument_not_in_the_spec_fails_at_load() -> None:
    class WrongArgument:
        __name__ = "wrong-argument"

        @hookimpl
        def eventbus_startup(self, server: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginLoadError, match="plugin 'wrong-argument' cannot be registered"):
        fresh(WrongArgument())


def test_duplicate_connector_names_are_refused_naming_both_plugins() -> None:
    with capture_logs() as logs:
        plugins = fresh(
            RegisteringPlugin("first", connectors=(EchoConnector("shared"),)),
            RegisteringPlugin("second", connectors=(EchoConnector("other"), EchoConnector("shared"))),
        )
        registry = plugins.connectors()

    # pluggy calls the last registered first: "second" takes the name, "first" is refused and contributes nothing.
    assert registry.names == ("other", "shared")
    assert registry.owner("shared") == "second"
    assert plugins.failures == {"first": 1}
    [failure] = [entry for entry in logs if entry["event"] == "plugin_failed"]
    assert failure["plugin"] == "first"
    assert failure["hook"] == "eventbus_register_connectors"
    assert "connector 'shared' from plugin 'first' is refused: plugin 'second' already registered" in failure["error"]


def test_registry_rules() -> None:
    connectors, destinations = ConnectorRegistry(), DestinationRegistry()
    connectors._begin("a")
    connectors.add(EchoConnector("echo"))
    connectors._end(failed=False)
    connectors._begin("b")
    with pytest.raises(DuplicateNameError, match="from plugin 'b' is refused: plugin 'a' already registered") as caught:
        connectors.add(EchoConnector("echo"))
    assert (caught.value.plugin, caught.value.taken_by) == ("b", "a")
    with pytest.raises(ValueError, match="name 'Echo Two' is invalid"):
        connectors.add(EchoConnector("Echo Two"))

    class SyncHandle(EchoConnector):
        def handle(self, *args: object) -> None:  # type: ignore[override]
            return None

    with pytest.raises(TypeError, match=r"handle\(\) must be `async def`"):
        connectors.add(SyncHandle("sync"))
    with pytest.raises(TypeError, match=r"has no deliver\(\) method"):
        destinations.add(EchoConnector("not-a-destination"))  # type: ignore[arg-type]
    for builtin in ("webhook", "grpc"):
        with pytest.raises(ValueError, match="built in"):
            destinations.add(CountingDestination(builtin))
    connectors._seal()
    with pytest.raises(RuntimeError, match="only from the register hook"):
        connectors.add(EchoConnector("late"))
    assert "echo" in connectors
    assert list(connectors) == ["echo"]
    assert connectors.get("nope") is None


def test_each_load_is_a_fresh_manager() -> None:
    first = fresh(RegisteringPlugin("acme", connectors=(EchoConnector("acme"),)))
    second = load_plugins(env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "true"})
    assert first.names == ("acme",)
    assert second.names == ()
    assert second.connectors().names == ()
