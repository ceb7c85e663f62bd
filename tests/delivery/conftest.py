"""Fixtures of the outbound-webhook behaviour tests: programmable aiohttp receivers on 127.0.0.1:0, an in-process
server that may reach them (127.0.0.1/32 allowlisted), and a manual clock that starts at the real time so the
reference `standardwebhooks` verifier (±5 min) accepts what the server signs."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from eventbus.bus.dispatch import DispatchSettings
from eventbus.bus.service import BusSettings
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.plugin import Plugins
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import Receiver

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture
def clock() -> ManualClock:
    """Manual, but starting now: signatures must pass the receivers' ±5 minute timestamp check."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, allow_destinations=LOOPBACK, shutdown_grace=0.5)


@pytest.fixture
def dispatch_settings() -> DispatchSettings:
    """Short grace at shutdown: a test that leaves a request hanging does not pay for it at teardown."""
    return DispatchSettings(stop_grace=0.2)


class Servers:
    """Starts in-process servers (defaults: this test's settings, clock and dispatch settings), stops them."""

    def __init__(
        self, settings: ServerSettings, clock: ManualClock, bus: BusSettings, dispatch: DispatchSettings
    ) -> None:
        self.settings, self.clock, self.bus, self.dispatch = settings, clock, bus, dispatch
        self.running: list[EventBusServer] = []

    async def start(
        self,
        settings: ServerSettings | None = None,
        *,
        dispatch: DispatchSettings | None = None,
        plugins: Plugins | None = None,
    ) -> EventBusServer:
        server = EventBusServer(
            settings or self.settings,
            clock=self.clock,
            bus_settings=self.bus,
            dispatch_settings=dispatch or self.dispatch,
            plugins=plugins,
        )
        await server.start()
        self.running.append(server)
        return server

    async def stop(self, server: EventBusServer) -> None:
        if server in self.running:
            self.running.remove(server)
            await server.stop(grace=0.2)


@pytest.fixture
async def servers(
    server_settings: ServerSettings,
    clock: ManualClock,
    bus_settings: BusSettings,
    dispatch_settings: DispatchSettings,
) -> AsyncIterator[Servers]:
    started = Servers(server_settings, clock, bus_settings, dispatch_settings)
    yield started
    for server in reversed(list(started.running)):
        await started.stop(server)


@pytest.fixture
async def server(servers: Servers) -> EventBusServer:
    return await servers.start()


@pytest.fixture
async def receiver(servers: Servers) -> AsyncIterator[Callable[[], Awaitable[Receiver]]]:
    """Start receivers; they are released and closed before the servers stop (hence the dependency)."""
    started: list[Receiver] = []

    async def make() -> Receiver:
        running = Receiver()
        await running.start()
        started.append(running)
        return running

    yield make
    for running in started:
        await running.close()
