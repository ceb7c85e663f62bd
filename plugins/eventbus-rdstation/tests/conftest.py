"""The rdstation destination's test rig: the RD API double on a real port, the SSRF-guarded client, a state; and a
real store (SQLite in the test's temp dir, or with EVENTBUS_TEST_STORE=postgresql a fresh PostgreSQL schema)."""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import eventbus_rdstation
import pytest
from aiohttp.test_utils import TestServer
from eventbus_rdstation.destination import RDStationDestination
from eventbus_rdstation.oauth import STATE_KEY
from eventbus_rdstation.testing import RDStationDouble

from eventbus.egress.client import EgressClient
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.model import Event, ExtensionValue, StoredEvent
from eventbus.plugin import Delivery, DestinationContext, DestinationResult, Plugins, load_plugins
from eventbus.store import open_store
from eventbus.store.base import Store

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONVERSION = {
    "event_type": "CONVERSION",
    "payload": {
        "conversion_identifier": "carrinho-abandonado",
        "email": "$.data.customer.email",
        "name": "$.data.customer.name",
        "tags": ["loja", "$.data.channel"],
    },
    "optional": ["name"],
}
SALE = {
    "event_type": "SALE",
    "payload": {"email": "$.data.customer.email", "value": "$.data.amount"},
}
CART = {"customer": {"email": "lead@example.com", "name": "Lead"}, "channel": "site", "amount": 199.9}


class MemoryState:
    """A KeyValueState in a dict: what the store-backed one does, minus persistence (`ttl` is not needed here)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def set(self, key: str, value: str, *, ttl: timedelta | None = None) -> None:
        self.values[key] = value
        self.writes += 1

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)


class Clock:
    """The double's clock (seconds), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delivery(
    data: object = None,
    *,
    type: str = "cart.abandoned",
    subject: str | None = "cart-42",
    extensions: Mapping[str, ExtensionValue] | None = None,
) -> Delivery:
    """One delivery of an event carrying `data` (default: a cart with a customer)."""
    event = Event.create(
        type=type,
        source="/shop",
        id="order-1",
        data=CART if data is None else data,
        subject=subject,
        time=NOW,
        extensions=extensions,
    )
    return Delivery("dlv_1", "sub_test", StoredEvent(event, "evt_1", 1, NOW), 1, NOW)


class Rig:
    """One RD double, one egress client, one subscription state; sends through a fresh plugin manager."""

    def __init__(self, double: RDStationDouble, base_url: str, egress: EgressClient) -> None:
        self.double = double
        self.base_url = base_url
        self.egress = egress
        self.state = MemoryState()  # the subscription's own state
        self.shared: dict[str, MemoryState] = {}  # the kind's shared states, by scope (every subscription's)
        self.plugins = self.new_process()

    def scope(self, name: str) -> MemoryState:
        return self.shared.setdefault(name, MemoryState())

    @property
    def tokens(self) -> MemoryState:
        """The shared state that holds the OAuth chain (one authorization in the test: one scope)."""
        scopes = [state for name, state in self.shared.items() if name.startswith("oauth-")]
        assert len(scopes) <= 1, f"more than one OAuth chain: {sorted(self.shared)}"
        return scopes[0] if scopes else MemoryState()

    @staticmethod
    def new_process() -> Plugins:
        """A plugin manager of its own, so a new RDStationDestination instance: another process, as far as it knows."""
        return load_plugins(extra=[eventbus_rdstation], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})

    @property
    def destination(self) -> RDStationDestination:
        destination = self.plugins.destinations().get("rdstation")
        assert isinstance(destination, RDStationDestination)
        return destination

    def oauth_options(self, mapping: Mapping[str, object] = SALE, **extra: object) -> dict[str, object]:
        options = {
            "base_url": self.base_url,
            "client_id": self.double.client_id,
            "client_secret": self.double.client_secret,
            "refresh_token": "rd-refresh-0",
            "mapping": dict(mapping),
            **extra,
        }
        return self.destination.validate_options(options)

    def api_key_options(self, mapping: Mapping[str, object] = CONVERSION, **extra: object) -> dict[str, object]:
        options = {"base_url": self.base_url, "api_key": "rd-api-key", "mapping": dict(mapping), **extra}
        return self.destination.validate_options(options)

    def context(
        self, options: Mapping[str, object], *, state: MemoryState | None = None, now: datetime = NOW
    ) -> DestinationContext:
        return DestinationContext(
            client=self.egress,
            options=options,
            state=state or self.state,
            now=now,
            subscription_id="sub_test",
            scopes=self.scope,
        )

    async def deliver(
        self,
        options: Mapping[str, object],
        sent: Delivery | None = None,
        *,
        plugins: Plugins | None = None,
        state: MemoryState | None = None,
        now: datetime = NOW,
    ) -> DestinationResult:
        plugins = plugins or self.plugins
        destination = plugins.destinations().get("rdstation")
        assert destination is not None
        result = await plugins.call_destination(
            destination, sent or delivery(), self.context(options, state=state, now=now)
        )
        assert isinstance(result, DestinationResult), result
        return result

    def stored(self, state: MemoryState | None = None) -> dict[str, object]:
        """The OAuth tokens the destination keeps in the shared state (of the only chain, or of `state`)."""
        value = (state or self.tokens).values.get(STATE_KEY)
        assert value is not None, "no OAuth tokens in the state"
        stored: dict[str, object] = json.loads(value)
        return stored

    def paths(self) -> list[str]:
        return [request.path for request in self.double.requests]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def double(clock: Clock) -> RDStationDouble:
    return RDStationDouble(clock=clock)


@pytest.fixture
async def rd_url(double: RDStationDouble) -> AsyncIterator[str]:
    server = TestServer(double.app, port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def egress() -> AsyncIterator[EgressClient]:
    client = EgressClient(DestinationPolicy(allow=(ipaddress.ip_network("127.0.0.0/8"),)), user_agent="eventbus-test")
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def rig(double: RDStationDouble, rd_url: str, egress: EgressClient) -> Rig:
    return Rig(double, rd_url, egress)


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
async def store_url(tmp_path: Path) -> AsyncIterator[str]:
    """Where the test's store lives: a SQLite file in its temp dir, or with EVENTBUS_TEST_STORE=postgresql a schema
    of the local `test` database made for it and dropped after it (skipped when PostgreSQL is down)."""
    backend = os.environ.get("EVENTBUS_TEST_STORE", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'eventbus.db'}"
        return
    if backend not in ("postgresql", "postgres"):
        raise pytest.UsageError(f"EVENTBUS_TEST_STORE={backend!r}: use 'sqlite' or 'postgresql'")
    import asyncpg

    try:
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'test'"):
            try:
                await admin.execute("CREATE DATABASE test")
            except asyncpg.DuplicateDatabaseError:
                pass  # another session made it first
    finally:
        await admin.close()
    schema = f"t_{uuid.uuid4().hex}"
    try:
        yield f"{PG_SERVER}/test?schema={schema}"
    finally:
        conn = await asyncpg.connect(f"{PG_SERVER}/test", timeout=5)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """The store `eventbus serve` would use, at `store_url`, opened."""
    opened = open_store(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
