"""Declared resources stay safe when something goes wrong: a refused replacement leaves the working source in place,
a crash between making a resource and marking it is recovered at the next start, and two processes starting with
the same file on one store both succeed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventbus.bus.sources import SourceInput
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.configuration.file import ConfigFileError
from eventbus.runtime import EventBusServer
from eventbus.store.managed import SOURCE, SUBSCRIPTION, ManagedRecord, ManagedStore
from tests.config.conftest import SECRET, Servers, write
from tests.config.test_declared import ENV, HEAD, SHOP, orders
from tests.conftest import TEST_STORE


def _managed(server: EventBusServer) -> ManagedStore:
    assert isinstance(server.store, ManagedStore)
    return server.store


async def _markers(server: EventBusServer) -> dict[tuple[str, str], ManagedRecord]:
    return {(r.resource, r.name): r for r in await _managed(server).list_managed()}


async def test_a_misspelt_connector_leaves_the_working_source_in_place(servers: Servers, config_path: Path) -> None:
    write(config_path, HEAD + SHOP)
    server = await servers.start(config_path, ENV)
    before = await server.services.sources.find("shop")
    write(config_path, HEAD + SHOP.replace('"echo"', '"echoo"'))
    outcome = await server.reload()
    assert outcome.errors and outcome.errors[0].startswith("sources[0].connector: unknown connector 'echoo'")
    assert (await server.services.sources.find("shop")) == before  # still receiving, unchanged
    assert (await _markers(server))[(SOURCE, "shop")].resource_id == before.id
    # A refused option of the new declaration is caught before the old source goes too.
    write(config_path, HEAD + SHOP.replace('"echo"', '"echoo"').replace('"strict"', '"wild"'))
    assert not (await server.reload()).ok
    assert (await server.services.sources.find("shop")).id == before.id


async def test_a_crash_between_making_and_marking_is_recovered_at_the_next_start(
    servers: Servers, config_path: Path
) -> None:
    write(config_path, HEAD)
    server = await servers.start(config_path, ENV)
    # What a crash right after `create` leaves: the pending claims, the resources made, no marker with their ids.
    now = server.bus.clock.now()
    for resource, name in ((SOURCE, "shop"), (SUBSCRIPTION, "orders")):
        assert await _managed(server).claim_managed(ManagedRecord(resource, name, "", "", now))
    source = await server.services.sources.create(SourceInput(name="shop", connector="echo", secrets=["old"]))
    made = await server.services.subscriptions.create(
        SubscriptionInput(
            name="orders", patterns=["stale.*"], options={"url": "http://127.0.0.1:9/orders", "secret": SECRET}
        )
    )
    await servers.stop(server)

    write(config_path, HEAD + SHOP + orders())
    with capture_logs() as logs:
        again = await servers.start(config_path, ENV)
    adopted = sorted(line["event"] for line in logs if line["event"].endswith("_adopted"))
    assert adopted == ["config_source_adopted", "config_subscription_adopted"]
    markers = await _markers(again)
    assert markers[(SOURCE, "shop")].resource_id == source.source.id
    assert markers[(SUBSCRIPTION, "orders")].resource_id == made.subscription.id
    # The declaration is what applies, not what was made before the crash, and its fingerprint is recorded.
    shop = await again.services.sources.find("shop")
    assert shop.options == {"mode": "strict"} and shop.active_secrets(again.bus.clock.now()) == ("shop-secret-1",)
    subscription = await again.services.subscriptions.get(made.subscription.id)
    assert subscription.subscription.patterns == ("order.*",)
    assert all(not m.pending and m.digest for m in markers.values())
    await servers.stop(again)
    with capture_logs() as logs:
        third = await servers.start(config_path, ENV)
    [applied] = [line for line in logs if line["event"] == "config_resources_applied"]
    assert applied["unchanged"] == 2 and applied["updated"] == [] and applied["created"] == []

    # A claim whose resource left the file goes with it.
    write(config_path, HEAD)
    now = third.bus.clock.now()
    await _managed(third).claim_managed(ManagedRecord(SOURCE, "gone", "", "", now))
    await third.services.sources.create(SourceInput(name="gone", connector="echo"))
    assert (await third.reload()).ok
    assert [s.source.name for s in (await third.services.sources.list_page())[0]] == []
    assert await _markers(third) == {}


async def test_a_source_made_through_the_api_is_still_refused_without_a_claim(
    servers: Servers, config_path: Path
) -> None:
    write(config_path, HEAD)
    server = await servers.start(config_path, ENV)
    await server.services.sources.create(SourceInput(name="shop", connector="echo"))
    await servers.stop(server)
    write(config_path, HEAD + SHOP)
    with pytest.raises(ConfigFileError, match="exists and was not made by the config file"):
        await servers.start(config_path, ENV)


@pytest.mark.skipif(TEST_STORE == "sqlite", reason="one process per SQLite file: scale-out is PostgreSQL's")
async def test_two_processes_starting_with_the_same_file_both_succeed(servers: Servers, config_path: Path) -> None:
    """Two servers on one PostgreSQL schema start at once from the same file."""
    write(config_path, HEAD + SHOP + orders())
    first, second = await asyncio.gather(servers.start(config_path, ENV), servers.start(config_path, ENV))
    sources = (await first.services.sources.list_page())[0]
    subscriptions = (await second.services.subscriptions.list_page())[0]
    assert [s.source.name for s in sources] == ["shop"]
    assert [s.subscription.name for s in subscriptions] == ["orders"]
    markers = await _markers(first)
    assert markers[(SOURCE, "shop")].resource_id == sources[0].source.id
    assert markers[(SUBSCRIPTION, "orders")].resource_id == subscriptions[0].subscription.id
    assert all(not m.pending for m in markers.values())
