"""Ingress metrics: gRPC Publish and `POST /events` by source and type with their latency, provider webhooks
(`POST /hooks/{source}`), duplicates, gRPC and HTTP request counts by method and code (route templates, never raw
paths), a plugin that raises, and the build info."""

from __future__ import annotations

import json

import aiohttp
import pytest

from eventbus import __version__
from eventbus.bus.sources import SourceInput
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import PermissionDeniedError
from eventbus.model import Event
from eventbus.plugin import Plugins
from eventbus.runtime import EventBusServer
from tests.delivery.conftest import Servers
from tests.metrics.helpers import scrape

PUBLISH = "/eventbus.v1.EventBus/Publish"


async def test_grpc_and_http_publishes_are_counted_by_source_type_method_and_code(server: EventBusServer) -> None:
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), timeout=10) as client:
        await client.publish([Event.create(type="order.paid", source="/shop", id=f"o-{n}") for n in range(3)])
        await client.publish(Event.create(type="order.paid", source="/shop", id="o-0"))  # a duplicate
        with pytest.raises(PermissionDeniedError):
            await client.publish(Event.create(type="order.paid", source="/hooks/forged", id="x"))  # reserved
    http = f"http://{server.addresses.http}"
    async with aiohttp.ClientSession() as session:
        event = {"specversion": "1.0", "type": "cart.opened", "source": "/web", "id": "c-1"}
        headers = {"Content-Type": "application/cloudevents+json"}
        async with session.post(f"{http}/events", data=json.dumps(event), headers=headers) as answer:
            assert answer.status == 202
        async with session.post(f"{http}/events", data=b"<xml/>", headers={"Content-Type": "text/xml"}) as answer:
            assert answer.status == 415
        async with session.get(f"{http}/no/such/secret-token-in-path") as answer:
            assert answer.status == 404

    seen = await scrape(server)
    assert seen.value("eventbus_events_published_total", source="/shop", type="order.paid") == 3
    assert seen.value("eventbus_events_published_total", source="/web", type="cart.opened") == 1
    assert seen.value("eventbus_events_duplicates_total", path="publish") == 1
    assert seen.value("eventbus_publish_duration_seconds_count") == 3  # three publishes committed
    assert seen.value("eventbus_grpc_requests_total", method=PUBLISH, code="OK") == 2
    assert seen.value("eventbus_grpc_requests_total", method=PUBLISH, code="PERMISSION_DENIED") == 1
    assert seen.value("eventbus_grpc_request_duration_seconds_count", method=PUBLISH) == 3
    assert seen.value("eventbus_http_requests_total", route="/events", method="POST", status="202") == 1
    assert seen.value("eventbus_http_requests_total", route="/events", method="POST", status="415") == 1
    assert seen.value("eventbus_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert "secret-token-in-path" not in seen.text
    assert seen.value("eventbus_build_info", version=__version__) == 1


async def test_a_stream_is_counted_when_it_ends(server: EventBusServer) -> None:
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), timeout=10) as client:
        await client.publish(Event.create(type="order.paid", source="/shop", id="s-1"))
        async with client.subscribe("billing", ["order.*"], start="earliest") as stream:
            async for item in stream:
                await item.ack()
                break
    subscribe = "/eventbus.v1.EventBus/Subscribe"

    async def ended() -> bool:
        seen = await scrape(server)
        return seen.value("eventbus_grpc_requests_total", method=subscribe) == 1

    from tests.delivery.helpers import eventually

    await eventually(ended, what="the Subscribe stream counted once it ended")
    seen = await scrape(server)
    assert seen.value("eventbus_group_lag", group="billing") == 0
    assert seen.value("eventbus_subscriptions", kind="grpc", state="active") == 1


async def test_provider_webhooks_and_a_failing_connector(
    servers: Servers, echo_plugins: Plugins, clock: ManualClock
) -> None:
    server = await servers.start(plugins=echo_plugins)
    await server.services.sources.create(SourceInput(name="shop", connector="echo", secrets=["t0k3n"]))
    assert server.addresses is not None
    url = f"http://{server.addresses.http}/hooks/shop"
    headers = {"X-Token": "t0k3n"}
    async with aiohttp.ClientSession() as session:
        for body, status in (
            ({"id": "d-1", "types": ["paid", "shipped"]}, 202),
            ({"id": "d-1", "types": ["paid", "shipped"]}, 200),  # the provider redelivers: nothing stored
            ({"crash": True}, 500),
        ):
            async with session.post(url, json=body, headers=headers) as answer:
                assert answer.status == status, await answer.text()
        async with session.post(url, json={"id": "d-2", "types": ["paid"]}) as answer:
            assert answer.status == 401  # no token: refused by the connector, nothing counted as ingested
    seen = await scrape(server)
    assert seen.value("eventbus_events_ingested_total", source="/hooks/shop", type="echo.paid") == 1
    assert seen.value("eventbus_events_ingested_total", source="/hooks/shop", type="echo.shipped") == 1
    assert seen.value("eventbus_events_duplicates_total", path="hooks") == 2
    assert seen.value("eventbus_plugin_errors_total", plugin="_EchoPlugin", hook="connector") == 1
    assert seen.value("eventbus_http_requests_total", route="/hooks/{source}", method="POST", status="500") == 1
    assert seen.value("eventbus_http_requests_total", route="/hooks/{source}", method="POST", status="401") == 1
    assert '/hooks/shop"' not in seen.text.replace('source="/hooks/shop"', "")  # routes are templates


async def test_a_redelivery_is_counted_from_the_stored_answer_when_the_connector_now_parses_more_events(
    servers: Servers, echo_plugins: Plugins
) -> None:
    server = await servers.start(plugins=echo_plugins)
    await server.services.sources.create(SourceInput(name="shop", connector="echo", secrets=["t0k3n"]))
    assert server.addresses is not None
    url = f"http://{server.addresses.http}/hooks/shop"
    body, headers = {"id": "d-1", "types": ["paid"]}, {"X-Token": "t0k3n"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as answer:
            assert answer.status == 202, await answer.text()
        # Now the same request parses into two events: the redelivery still gets the stored answer (one event).
        await server.services.sources.update("shop", SourceInput(options={"also": "audit"}))
        for _ in range(2):
            async with session.post(url, json=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                assert [e["id"] for e in (await answer.json())["events"]] == ["d-1.paid"]
    seen = await scrape(server)
    assert seen.value("eventbus_events_ingested_total", source="/hooks/shop", type="echo.paid") == 1
    assert seen.value("eventbus_events_duplicates_total", path="hooks") == 2
