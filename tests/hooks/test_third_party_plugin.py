"""A third-party connector, built in a temp directory and pip-installed there, is found through its entry point
by a real `eventbus serve` process and serves a source."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from eventbus.client import EventBusClient
from eventbus.store import open_store
from eventbus.store.sources import SourceSecret, SourceSpec, source_store_of
from tests.conftest import ServerProcess, start_server_process, store_url
from tests.plugin.test_entry_points import ACME_MODULE, build_distribution


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acme-hooks")
    return build_distribution(
        root, dist="eventbus-acme", version="1.2.3", entry_point="acme", module="eventbus_acme", code=ACME_MODULE
    )


async def test_an_installed_connector_serves_a_source(
    tmp_path: Path, acme_site: Path, server_process: list[ServerProcess]
) -> None:
    url = store_url(tmp_path)
    store = open_store(url)  # the process owns the file once it runs: the source is made first
    await store.open()
    try:
        spec = SourceSpec(name="orders", connector="acme", secrets=(SourceSecret("tok-1"),))
        await source_store_of(store).create_source(spec, now=datetime.now(UTC))
    finally:
        await store.close()
    env = {"PYTHONPATH": str(acme_site), "EVENTBUS_DISABLE_PLUGINS": "", "EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": ""}
    running = await asyncio.to_thread(start_server_process, tmp_path, store=url, env=env)
    server_process.append(running)

    async with aiohttp.ClientSession() as http:
        headers = {"X-Acme-Token": "tok-1", "X-Acme-Delivery": "d-42"}
        async with http.post(f"http://{running.http}/hooks/orders", data=b'{"order": 1}', headers=headers) as answer:
            assert answer.status == 202
            [stored] = (await answer.json())["events"]
        async with http.post(
            f"http://{running.http}/hooks/orders", data=b"{}", headers={"X-Acme-Token": "nope"}
        ) as refused:
            assert refused.status == 401
    async with EventBusClient(running.grpc, timeout=10) as client:
        event = await client.get_event(stored["event_id"])
    assert (event.event.type, event.event.source, event.event.id) == ("acme.order.created", "/hooks/orders", "d-42")
