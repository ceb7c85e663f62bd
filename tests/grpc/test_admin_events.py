"""`Admin.GetEvent`: one event with the raw `/hooks/{source}` request it came from, redacted as it was stored and
the same as REST `GET /v1/events/{id}` shows it; nothing for a published event. The connector is `picky`, a test
plugin's (it takes any request), so these tests do not depend on installed plugins."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from eventbus.bus.service import BusSettings
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import NotFoundError
from eventbus.grpc.convert import from_timestamp
from eventbus.model import Event, format_rfc3339
from eventbus.plugin import load_plugins
from eventbus.runtime import EventBusServer
from eventbus.v1 import admin_pb2_grpc
from eventbus.v1 import eventbus_pb2 as pb
from tests.grpc.test_admin_sources import PickyConnector
from tests.plugin.support import NO_AUTOLOAD, RegisteringPlugin

BODY = b'{"order": "o-1"}\x1b[2J\xff'  # not UTF-8: kept byte-exact
SENT_HEADERS = {
    "Authorization": "Bearer provider-token",
    "X-Picky-Signature": "sha256=abcdef",
    "X-Trace": "t-1",
    "Content-Type": "application/octet-stream",
}


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    plugins = load_plugins(extra=[RegisteringPlugin("picky-plugin", connectors=(PickyConnector(),))], env=NO_AUTOLOAD)
    running = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings, plugins=plugins)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


async def hook(http_url: str, client: EventBusClient) -> tuple[str, dict[str, Any]]:
    """One accepted `/hooks/shop` request; the event id, and what REST shows as its raw request."""
    await client.create_source("shop", "picky")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{http_url}/hooks/shop?token=url-secret&via=test", data=BODY, headers=SENT_HEADERS
        ) as answer:
            assert answer.status == 202, await answer.text()
            [accepted] = (await answer.json())["events"]
        async with http.get(f"{http_url}/v1/events/{accepted['event_id']}") as shown:
            assert shown.status == 200, await shown.text()
            raw: dict[str, Any] = (await shown.json())["raw_request"]
    return str(accepted["event_id"]), raw


async def test_get_event_answers_the_redacted_raw_request_as_rest_does(
    client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub, http_url: str, clock: ManualClock
) -> None:
    event_id, rest_raw = await hook(http_url, client)
    detail = await admin_stub.GetEvent(pb.GetEventRequest(event_id=event_id))
    assert detail.event.event_id == event_id and detail.event.event.source == "/hooks/shop"
    assert detail.HasField("raw_request")
    raw = detail.raw_request
    assert raw.request_id.startswith("req_") and (raw.method, raw.path) == ("POST", "/hooks/shop")
    assert from_timestamp(raw.received_at) == clock.now()
    assert raw.body == BODY
    assert [(q.name, q.value) for q in raw.query] == [("token", "[redacted]"), ("via", "[redacted]")]
    headers = {h.name.lower(): h.value for h in raw.headers}
    assert headers["authorization"] == headers["x-picky-signature"] == "[redacted]"
    assert (headers["x-trace"], headers["content-type"]) == ("t-1", "application/octet-stream")
    assert raw.HasField("remote") and raw.remote == "127.0.0.1"
    for secret in (b"provider-token", b"abcdef", b"url-secret"):
        assert secret not in detail.SerializeToString()

    # The same request as REST shows it: one service method, one redaction.
    assert rest_raw == {
        "request_id": raw.request_id,
        "received_at": format_rfc3339(from_timestamp(raw.received_at)),
        "method": raw.method,
        "path": raw.path,
        "query": [[q.name, q.value] for q in raw.query],
        "headers": [[h.name, h.value] for h in raw.headers],
        "body": "",
        "body_base64": base64.b64encode(BODY).decode(),
        "remote": raw.remote,
    }

    # By (source, id) too, and through the client.
    by_identity = await admin_stub.GetEvent(
        pb.GetEventRequest(source_id=pb.EventRef(source="/hooks/shop", id=detail.event.event.id))
    )
    assert by_identity == detail
    stored, status = await client.get_event_detail(event_id)
    assert stored == await client.get_event(event_id)
    assert (
        status is not None and status.body == BODY and status.headers == tuple((h.name, h.value) for h in raw.headers)
    )
    assert (status.query, status.remote, status.request_id) == (
        (("token", "[redacted]"), ("via", "[redacted]")),
        "127.0.0.1",
        raw.request_id,
    )


async def test_a_published_event_has_no_raw_request(
    client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub
) -> None:
    [published] = await client.publish(Event.create(type="order.paid", source="/shop", id="o-1", data={"n": 1}))
    detail = await admin_stub.GetEvent(pb.GetEventRequest(event_id=published.event_id))
    assert detail.event.event_id == published.event_id and detail.event.seq == published.seq
    assert not detail.HasField("raw_request")
    stored, raw = await client.get_event_detail(source="/shop", id="o-1")
    assert raw is None and stored == await client.get_event(published.event_id)


async def test_get_event_refusals(client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub) -> None:
    with pytest.raises(NotFoundError):
        await client.get_event_detail("evt_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    for request in (pb.GetEventRequest(), pb.GetEventRequest(source_id=pb.EventRef(source="/shop"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin_stub.GetEvent(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
