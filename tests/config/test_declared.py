"""Declared sources and subscriptions: created at start-up through the service layer, marked as the file's,
updated when their declaration changes, removed (with a log line) when they leave the file; what the API created
is never touched, and the API may not change what the file manages."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from eventbus.bus.sources import SourceInput
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.configuration.file import ConfigFileError
from eventbus.errors import FailedPreconditionError
from eventbus.runtime import EventBusServer
from eventbus.store.base import SubscriptionState
from tests.config.conftest import OTHER_SECRET, SECRET, Servers, write

HEAD = '[security]\nallow_destinations = ["127.0.0.0/8"]\n'
SHOP = '[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = ["env:SHOP_SECRET"]\noptions = { mode = "strict" }\n'


def orders(patterns: str = '["order.*"]', extra: str = "") -> str:
    return (
        f'[[subscriptions]]\nname = "orders"\nurl = "http://127.0.0.1:9/orders"\nsecret = "{SECRET}"\n'
        f"patterns = {patterns}\n{extra}"
    )


ENV = {"SHOP_SECRET": "shop-secret-1"}


async def _named(server: EventBusServer) -> dict[str, str]:
    """Push subscriptions by name (the API's own have none) → id."""
    infos, _ = await server.services.subscriptions.list_page()
    return {i.subscription.name or i.subscription.id: i.subscription.id for i in infos}


async def test_declared_resources_are_created_then_left_alone_across_restarts(
    servers: Servers, config_path: Path
) -> None:
    write(config_path, HEAD + SHOP + orders())
    server = await servers.start(config_path, ENV)
    source = await server.services.sources.find("shop")
    assert source.connector == "echo" and source.options == {"mode": "strict"}
    assert source.active_secrets(server.bus.clock.now()) == ("shop-secret-1",)
    named = await _named(server)
    subscription = await server.services.subscriptions.get(named["orders"])
    assert subscription.subscription.patterns == ("order.*",) and subscription.options["url"].endswith("/orders")
    assert subscription.subscription.retry_schedule == server.bus.settings.retry_schedule
    await servers.stop(server)

    with capture_logs() as logs:
        again = await servers.start(config_path, ENV)
    assert await _named(again) == named  # the same one, not a second
    assert (await again.services.sources.find("shop")).id == source.id
    [applied] = [line for line in logs if line["event"] == "config_resources_applied"]
    assert applied["created"] == [] and applied["updated"] == [] and applied["unchanged"] == 2


async def test_the_api_may_not_change_what_the_file_manages(servers: Servers, config_path: Path) -> None:
    write(config_path, HEAD + SHOP + orders())
    server = await servers.start(config_path, ENV)
    subscriptions, sources = server.services.subscriptions, server.services.sources
    managed = (await _named(server))["orders"]
    for attempt in (
        subscriptions.update(managed, SubscriptionInput(patterns=["**"])),
        subscriptions.delete(managed),
        subscriptions.rotate_secret(managed),
        sources.update("shop", SourceInput(options={"mode": "lax"})),
        sources.rotate_secret("shop"),
        sources.delete("shop"),
    ):
        with pytest.raises(FailedPreconditionError, match="managed by the config file"):
            await attempt
    # Operational switches stay the operator's: pause a subscription, disable a source.
    assert (await subscriptions.pause(managed)).subscription.state == SubscriptionState.PAUSED
    assert (await sources.update("shop", SourceInput(enabled=False))).source.enabled is False
    # The transports answer with the same refusal (REST: 409 problem+json).
    assert server.addresses is not None
    url = f"http://{server.addresses.http}/v1/subscriptions/{managed}"
    async with aiohttp.ClientSession() as http, http.delete(url) as reply:
        assert reply.status == 409
        assert "managed by the config file" in (await reply.json())["detail"]
    # What the API made is the API's.
    made = await subscriptions.create(SubscriptionInput(options={"url": "http://127.0.0.1:9/api"}))
    await subscriptions.update(made.subscription.id, SubscriptionInput(patterns=["api.*"]))
    await subscriptions.delete(made.subscription.id)


async def test_changes_apply_on_reload_and_removals_delete_with_a_log_line(servers: Servers, config_path: Path) -> None:
    write(config_path, HEAD + SHOP + orders(extra='headers = { X-Team = "shop" }\n'))
    server = await servers.start(config_path, ENV)
    subscriptions = server.services.subscriptions
    api_made = await subscriptions.create(SubscriptionInput(options={"url": "http://127.0.0.1:9/api"}))
    api_source = await server.services.sources.create(SourceInput(name="api-src", connector="echo"))
    managed = (await _named(server))["orders"]

    # Changed: new patterns, the header gone, a new secret (a rotation), paused; the source's option and secret.
    write(
        config_path,
        HEAD
        + SHOP.replace("strict", "lax")
        + orders('["order.paid", "refund.*"]', "paused = true\n").replace(SECRET, OTHER_SECRET),
    )
    outcome = await server.reload()
    assert outcome.ok and outcome.declared is not None, outcome.errors
    assert sorted(outcome.declared.updated) == ["source shop", "subscription orders"]
    info = await subscriptions.get(managed)
    assert info.subscription.patterns == ("order.paid", "refund.*") and info.options["headers"] == {}
    assert info.subscription.state == SubscriptionState.PAUSED
    assert [k["secret"] for k in info.subscription.secrets["keys"]] == [OTHER_SECRET, SECRET]  # old one: 24 h grace
    assert (await server.services.sources.find("shop")).options == {"mode": "lax"}

    # Reloading the same file again changes nothing.
    again = await server.reload()
    assert again.declared is not None and again.declared.updated == [] and again.declared.created == []

    # Removed from the file: deleted, with one log line each; what the API made stays.
    write(config_path, HEAD)
    with capture_logs() as logs:
        removed = await server.reload()
    assert removed.declared is not None and sorted(removed.declared.removed) == ["source shop", "subscription orders"]
    lines = [line for line in logs if line["event"] == "config_resource_removed"]
    assert sorted((line["resource"], line["name"]) for line in lines) == [
        ("source", "shop"),
        ("subscription", "orders"),
    ]
    assert set(await _named(server)) == {api_made.subscription.id}
    assert [s.source.name for s in (await server.services.sources.list_page())[0]] == [api_source.source.name]


async def test_declarations_the_services_refuse_stop_the_start_naming_the_key(
    servers: Servers, config_path: Path
) -> None:
    write(
        config_path,
        '[[sources]]\nname = "shop"\nconnector = "echo"\nsecrets = ["s"]\noptions = { mode = "wild" }\n'
        '[[sources]]\nname = "gh"\nconnector = "nope"\nsecrets = ["s"]\n'
        + orders().replace("127.0.0.1:9", "10.1.2.3"),  # private, and not allowlisted
    )
    with pytest.raises(ConfigFileError) as refused:
        await servers.start(config_path)
    fields = [v.field for v in refused.value.violations]
    assert fields == ["sources[0].options.mode", "sources[1].connector", "subscriptions[0].url"], refused.value.errors


async def test_an_api_made_source_is_never_taken_over(servers: Servers, config_path: Path) -> None:
    write(config_path, HEAD)
    server = await servers.start(config_path, ENV)
    made = await server.services.sources.create(SourceInput(name="shop", connector="echo"))
    write(config_path, HEAD + SHOP)
    reloaded = await server.reload()
    assert not reloaded.ok and reloaded.errors[0].startswith("sources[0]: a source named 'shop' exists"), reloaded
    assert (await server.services.sources.find("shop")).id == made.source.id
    await server.services.sources.delete("shop")  # still the API's to delete
    assert (await server.reload()).ok
    assert (await server.services.sources.find("shop")).id != made.source.id  # now declared, and the file's
