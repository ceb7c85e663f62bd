"""Fixtures of the REST API tests: an in-process server with an admin `--api-key`, the installed plugins (the
bundled connectors, e.g. `standardwebhooks`) plus `memo`, a destination kind of these tests, deliveries allowed to
loopback receivers, a manual clock that starts at the real time (signatures carry it), and `rest`, a JSON client
for `/v1` holding the admin key."""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from types import ModuleType

import aiohttp
import pytest

from eventbus.bus.dispatch import DispatchSettings
from eventbus.bus.service import BusSettings
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import InvalidArgumentError
from eventbus.plugin import (
    Delivery,
    DestinationContext,
    DestinationRegistry,
    DestinationResult,
    Plugins,
    hookimpl,
    load_plugins,
)
from eventbus.runtime import EventBusServer
from eventbus.store.records import HealthPolicy
from tests.delivery.helpers import MakeReceiver, Receiver
from tests.rest.helpers import ADMIN_KEY, Rest

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


class Memo:
    """A destination kind that takes every delivery (option `account` required): a second kind beside webhook."""

    name = "memo"

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        if not isinstance(options.get("account"), str):
            raise InvalidArgumentError.for_field("options.account", "the account name is required")
        return dict(options)

    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        self.delivered.append(delivery)
        return DestinationResult.success(status_code=200)


def plugins_with(memo: Memo) -> Plugins:
    """The installed plugins and `memo`."""
    module = ModuleType("rest_memo_destination")

    @hookimpl
    def eventbus_register_destinations(registry: DestinationRegistry) -> None:
        registry.add(memo)

    module.eventbus_register_destinations = eventbus_register_destinations  # type: ignore[attr-defined]
    sys.modules.setdefault(module.__name__, module)
    return load_plugins(extra=[module])


@pytest.fixture
def memo() -> Memo:
    return Memo()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, api_key=ADMIN_KEY, allow_destinations=LOOPBACK, shutdown_grace=0.5)


@pytest.fixture
def dispatch_settings() -> DispatchSettings:
    """The circuit stays closed however many failures a test causes; a short grace at shutdown."""
    return DispatchSettings(stop_grace=0.2, health=HealthPolicy(failure_threshold=1000))


@pytest.fixture
async def server(
    server_settings: ServerSettings,
    clock: ManualClock,
    bus_settings: BusSettings,
    dispatch_settings: DispatchSettings,
    memo: Memo,
) -> AsyncIterator[EventBusServer]:
    running = EventBusServer(
        server_settings,
        clock=clock,
        bus_settings=bus_settings,
        dispatch_settings=dispatch_settings,
        plugins=plugins_with(memo),
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.2)


@pytest.fixture
async def receiver(server: EventBusServer) -> AsyncIterator[MakeReceiver]:
    """Start loopback receivers; they close before the server stops (hence the dependency)."""
    started: list[Receiver] = []

    async def make() -> Receiver:
        running = Receiver()
        await running.start()
        started.append(running)
        return running

    yield make
    for running in started:
        await running.close()


@pytest.fixture
async def rest(http_url: str) -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession() as session:
        yield Rest(session, http_url, ADMIN_KEY)
