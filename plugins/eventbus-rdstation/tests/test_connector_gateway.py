"""The rdstation connector behind a real gateway: a generated URL token, `/hooks/<source>?token=...`, redeliveries
answered 200 with nothing new stored, and a rotation during which both tokens verify."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eventbus_rdstation.connector import RDStationConnector
from fixtures_inbound import CONVERTED, converted, crm, encode, lead, legacy

from eventbus.bus.service import BusSettings
from eventbus.bus.sources import SourceInput
from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.errors import InvalidArgumentError
from eventbus.plugin import ConnectorRegistry, hookimpl, load_plugins
from eventbus.runtime import EventBusServer

# The suite's store choice (EVENTBUS_TEST_STORE: a SQLite file, or a fresh PostgreSQL schema per test), and its
# autouse fixture that drops the schemas a test made: imported, pytest uses it here as well.
from tests.conftest import _drop_test_schemas, store_url  # noqa: F401


class _Plugin:
    """Registers only the connector: the package's `__init__` also wants the destination module."""

    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(RDStationConnector())


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EventBusServer]:
    settings = ServerSettings(
        store_url=store_url(tmp_path),
        grpc_listen=ListenAddress("127.0.0.1", 0),
        http_listen=ListenAddress("127.0.0.1", 0),
        shutdown_grace=2.0,
    )
    plugins = load_plugins(extra=[_Plugin()], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    running = EventBusServer(
        settings, clock=ManualClock(), bus_settings=BusSettings(janitor_every=3600.0), plugins=plugins
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def token(server: EventBusServer) -> str:
    info = await server.services.sources.create(SourceInput(name="rd-leads", connector="rdstation"))
    (generated,) = info.revealed
    return generated


async def post(server: EventBusServer, body: object, token: str | None) -> tuple[int, dict[str, Any]]:
    assert server.addresses is not None
    url = f"http://{server.addresses.http}/hooks/rd-leads"
    params = {"token": token} if token is not None else None
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, params=params, data=encode(body), headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_the_generated_token_is_url_safe_and_verifies(server: EventBusServer, token: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    status, answer = await post(server, CONVERTED, token)
    assert status == 202
    [event] = answer["events"]
    assert (event["source"], event["duplicate"]) == ("/hooks/rd-leads", False)


async def test_a_missing_or_wrong_token_is_401_and_never_echoed(server: EventBusServer, token: str) -> None:
    status, answer = await post(server, CONVERTED, None)
    assert status == 401
    guess = "a-guessed-token-0000000000"
    status, answer = await post(server, CONVERTED, guess)
    assert status == 401
    assert guess not in str(answer)
    assert token not in str(answer)


async def test_a_contact_redelivered_with_another_send_time_is_200_and_stores_nothing(
    server: EventBusServer, token: str
) -> None:
    status, first = await post(server, CONVERTED, token)
    assert status == 202
    status, again = await post(server, converted(timestamp="2018-03-13T16:00:00.000-03:00"), token)
    assert status == 200
    assert again["events"][0]["event_id"] == first["events"][0]["event_id"]


async def test_an_identical_legacy_body_is_200_and_a_lead_redelivered_in_a_new_body_is_a_duplicate(
    server: EventBusServer, token: str
) -> None:
    body = legacy(lead(), lead(uuid="2b1e0f55-0000-4000-8000-000000000002"))
    status, first = await post(server, body, token)
    assert status == 202
    assert [e["duplicate"] for e in first["events"]] == [False, False]
    status, again = await post(server, body, token)
    assert (status, again) == (200, first)
    status, mixed = await post(server, legacy(lead(), lead(uuid="2b1e0f55-0000-4000-8000-000000000003")), token)
    assert status == 202
    assert [e["duplicate"] for e in mixed["events"]] == [True, False]
    assert mixed["events"][0]["event_id"] == first["events"][0]["event_id"]


async def test_a_crm_redelivery_is_200(server: EventBusServer, token: str) -> None:
    assert (await post(server, crm("crm_deal_updated"), token))[0] == 202
    assert (await post(server, crm("crm_deal_updated"), token))[0] == 200


async def test_both_tokens_verify_after_a_rotation(server: EventBusServer, token: str) -> None:
    rotated = await server.services.sources.rotate_secret("rd-leads")
    (new_token,) = rotated.revealed
    assert new_token != token
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", new_token)
    assert (await post(server, CONVERTED, token))[0] == 202
    assert (await post(server, converted(event_identifier="newsletter"), new_token))[0] == 202


async def test_a_token_that_breaks_the_url_is_refused_when_the_source_is_made(server: EventBusServer) -> None:
    with pytest.raises(InvalidArgumentError, match=r"secrets\[0\]"):
        await server.services.sources.create(
            SourceInput(name="rd-bad", connector="rdstation", secrets=["not a url token!"])
        )
    with pytest.raises(InvalidArgumentError, match=r"options\.event_identifiers"):
        await server.services.sources.create(
            SourceInput(name="rd-filter", connector="rdstation", options={"event_identifiers": ["x"]})
        )
