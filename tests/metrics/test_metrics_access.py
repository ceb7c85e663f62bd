"""Who may scrape: `/metrics` needs the `admin` scope (401 without a key, 403 with a publish key) unless the server
runs with `--metrics-public`; one server's setting never opens another's in the same process."""

from __future__ import annotations

import dataclasses

import aiohttp

from eventbus.config import ServerSettings
from tests.delivery.conftest import Servers
from tests.metrics.helpers import get_metrics, scrape

ADMIN_KEY = "ebk_metrics_adminsecretadminsecret"


async def test_metrics_need_the_admin_scope(servers: Servers, server_settings: ServerSettings) -> None:
    server = await servers.start(dataclasses.replace(server_settings, api_key=ADMIN_KEY))
    status, content_type, body = await get_metrics(server)
    assert status == 401
    assert content_type.startswith("application/problem+json")
    assert "eventbus_" not in body
    status, _, _ = await get_metrics(server, key="ebk_metrics_wrongwrongwrongwrong")
    assert status == 401
    publisher = await server.services.api_keys.create(["publish"], name="publisher")
    status, _, _ = await get_metrics(server, key=publisher.key)
    assert status == 403
    seen = await scrape(server, key=ADMIN_KEY)
    assert seen.value("eventbus_build_info") == 1


async def test_metrics_public_opens_only_metrics_and_only_on_that_server(
    servers: Servers, server_settings: ServerSettings
) -> None:
    keyed = dataclasses.replace(server_settings, api_key=ADMIN_KEY)
    public = await servers.start(dataclasses.replace(keyed, metrics_public=True))
    private_settings = dataclasses.replace(keyed, store_url=server_settings.store_url.replace(".db", "-2.db"))
    if private_settings.store_url == keyed.store_url:  # PostgreSQL: one schema per test serves both servers
        private_settings = keyed
    private = await servers.start(private_settings)
    seen = await scrape(public)  # no key at all
    assert seen.value("eventbus_build_info") == 1
    status, _, _ = await get_metrics(private)
    assert status == 401
    assert public.addresses is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{public.addresses.http}/v1/subscriptions") as answer,
    ):
        assert answer.status == 401  # the rest of the API still needs its key
