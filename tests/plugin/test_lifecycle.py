"""`eventbus_startup` and `eventbus_shutdown`: each implementation runs, sync or async, failures contained."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from eventbus.clock import ManualClock
from eventbus.egress.client import EgressClient
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.plugin import ServerContext, hookimpl
from tests.plugin.support import fresh


class Recorder:
    """Appends what happened to a shared journal; `fail` names the hook that raises."""

    def __init__(self, name: str, journal: list[tuple[str, str]], fail: str | None = None) -> None:
        self.__name__ = name
        self.journal = journal
        self.fail = fail

    @hookimpl
    async def eventbus_startup(self, context: ServerContext) -> None:
        self.journal.append((self.__name__, f"startup at {context.now().isoformat()}"))
        if self.fail == "startup":
            raise RuntimeError("cannot reach the provider")

    @hookimpl
    def eventbus_shutdown(self, context: ServerContext) -> None:
        self.journal.append((self.__name__, "shutdown"))
        if self.fail == "shutdown":
            raise RuntimeError("close failed")


class OnlyShutdown:
    """Takes no arguments: pluggy passes only what an implementation names."""

    __name__ = "only-shutdown"

    def __init__(self, journal: list[tuple[str, str]]) -> None:
        self.journal = journal

    @hookimpl
    def eventbus_shutdown(self) -> None:
        self.journal.append((self.__name__, "shutdown"))


@pytest.fixture
async def context() -> AsyncIterator[ServerContext]:
    egress = EgressClient(DestinationPolicy(), user_agent="eventbus-test")
    await egress.start()
    try:
        yield ServerContext(http=egress.session, now=ManualClock().now)
    finally:
        await egress.close()


async def test_startup_and_shutdown_run_every_implementation_in_order(context: ServerContext) -> None:
    journal: list[tuple[str, str]] = []
    plugins = fresh(Recorder("a", journal), Recorder("b", journal, fail="startup"), OnlyShutdown(journal))

    with capture_logs() as logs:
        await plugins.startup(context)
        await plugins.shutdown()
        await plugins.shutdown()  # a second call does nothing

    started = "startup at 2026-01-01T00:00:00+00:00"
    # pluggy's order for startup (last registered first), the reverse for shutdown; b's failure stops nobody.
    assert journal == [
        ("b", started),
        ("a", started),
        ("a", "shutdown"),
        ("b", "shutdown"),
        ("only-shutdown", "shutdown"),
    ]
    assert plugins.failures == {"b": 1}
    assert [(e["event"], e["plugin"], e["hook"], e["error"]) for e in logs] == [
        ("plugin_failed", "b", "eventbus_startup", "RuntimeError: cannot reach the provider")
    ]


async def test_a_failing_shutdown_is_contained(context: ServerContext) -> None:
    journal: list[tuple[str, str]] = []
    plugins = fresh(Recorder("a", journal, fail="shutdown"), Recorder("b", journal))

    await plugins.startup(context)
    await plugins.shutdown()

    # a (started last, so stopped first) raises; b still stops.
    assert [entry for entry in journal if entry[1] == "shutdown"] == [("a", "shutdown"), ("b", "shutdown")]
    assert plugins.failures == {"a": 1}


async def test_shutdown_without_startup_does_nothing() -> None:
    journal: list[tuple[str, str]] = []
    plugins = fresh(Recorder("a", journal))
    await plugins.shutdown()
    assert journal == []
