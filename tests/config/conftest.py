"""Fixtures of the config-file tests: a file in the test's temp dir, and an in-process server started from it (its
flags and environment kept, so `reload()` reads them again over the file as `serve` does on SIGHUP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from eventbus.clock import ManualClock
from eventbus.config import ServerSettings, settings_from
from eventbus.errors import InvalidArgumentError
from eventbus.plugin import ConnectorRegistry, hookimpl, load_plugins
from eventbus.plugin.connectors import ConnectorResult, InboundRequest, Refused, SourceConfig
from eventbus.runtime import EventBusServer
from tests.conftest import store_url

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"  # 30 bytes, base64
OTHER_SECRET = "whsec_" + "enl4d3Z1dHNycXBvbm1sa2ppaGdmZWRjYmEwMTIz"


class _EchoConnector:
    """A connector with one option (`mode`: strict or lax), enough to declare sources."""

    name = "echo"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        if "mode" in options and options["mode"] not in ("strict", "lax"):
            raise InvalidArgumentError.for_field("options.mode", "strict or lax")
        return dict(options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: object) -> ConnectorResult:
        return Refused.unauthorized("the echo connector accepts nothing", field="body")


class _Plugin:
    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(_EchoConnector())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "eventbus.toml"


class Servers:
    """Starts servers from the config file (each stopped at the end of the test)."""

    def __init__(self, tmp_path: Path, clock: ManualClock) -> None:
        self.tmp_path = tmp_path
        self.clock = clock
        self.running: list[EventBusServer] = []

    def flags(self, config: Path, **more: object) -> dict[str, object]:
        return {
            "config": str(config),
            "store": store_url(self.tmp_path),
            "grpc_listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            **more,
        }

    async def start(self, config: Path, env: Mapping[str, str] | None = None, **flags: object) -> EventBusServer:
        given = self.flags(config, **flags)
        environment = dict(env or {})
        settings: ServerSettings = settings_from(given, environment)
        plugins = load_plugins(extra=[_Plugin()], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
        server = EventBusServer(
            settings,
            clock=self.clock,
            plugins=plugins,
            settings_source=lambda: settings_from(given, environment),
        )
        try:
            await server.start()
        except BaseException:
            await server.stop(0)
            raise
        self.running.append(server)
        return server

    async def stop(self, server: EventBusServer) -> None:
        self.running.remove(server)
        await server.stop(grace=0.5)


@pytest.fixture
async def servers(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Servers]:
    made = Servers(tmp_path, clock)
    yield made
    for server in list(made.running):
        await server.stop(grace=0.5)
