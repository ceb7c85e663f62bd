"""`POST /events`: CloudEvents from the `cloudevents` SDK (binary and structured) and hand-made batches round-trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventbus.client import EventBusClient
from eventbus.model import DataKind
from eventbus.runtime import EventBusServer
from tests.grpc.helpers import Consumer
from tests.http.helpers import post, stored_events

BINARY = bytes(range(256)) * 4


def sdk_event(data: object, **attributes: object) -> CloudEvent:
    base: dict[str, object] = {"type": "com.example.order.paid", "source": "https://shop.example/orders"}
    base.update(attributes)
    return CloudEvent(base, data)


async def send(http_url: str, message: HTTPMessage) -> tuple[int, dict[str, object]]:
    return await post(http_url, message.body, message.headers)


async def test_binary_mode_from_the_sdk_round_trips_byte_exact(
    server: EventBusServer, client: EventBusClient, http_url: str
) -> None:
    moment = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    json_event = sdk_event(
        {"total": 1999, "note": "ação"},
        id="bin-json",
        subject='Euro € 😀 "quoted" 100%',
        time=moment,
        datacontenttype="application/json",
        dataschema="https://shop.example/schemas/order.json",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tenant="acme corp",
    )
    bytes_event = sdk_event(BINARY, id="bin-bytes", datacontenttype="application/octet-stream", time=moment)
    json_message = to_binary(json_event, JSONFormat())
    assert json_message.headers["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25"

    async with Consumer(client.subscribe(None, ["com.example.**"])) as consumer:
        status, body = await send(http_url, json_message)
        assert status == 202, body
        status, second = await send(http_url, to_binary(bytes_event, JSONFormat()))
        assert status == 202, second
        delivered = [await consumer.next() for _ in range(2)]
        for delivery in delivered:
            await delivery.ack()

    [answer] = body["events"]  # type: ignore[misc]
    assert answer["id"] == "bin-json" and answer["source"] == "https://shop.example/orders"
    assert answer["event_id"].startswith("evt_") and answer["duplicate"] is False and answer["seq"] >= 1
    assert [d.event.event.id for d in delivered] == ["bin-json", "bin-bytes"]

    stored = await client.get_event(source="https://shop.example/orders", id="bin-json")
    assert stored.event_id == answer["event_id"]
    event = stored.event
    assert (event.type, event.specversion) == ("com.example.order.paid", "1.0")
    assert event.subject == 'Euro € 😀 "quoted" 100%'
    assert event.time == moment
    assert event.datacontenttype == "application/json"
    assert event.dataschema == "https://shop.example/schemas/order.json"
    assert dict(event.extensions) == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tenant": "acme corp",
    }
    assert event.data == json_message.body  # byte-exact, spaces and escapes as sent
    assert event.json_data() == {"total": 1999, "note": "ação"}
    assert delivered[0].event.event.data == json_message.body

    raw = await client.get_event(source="https://shop.example/orders", id="bin-bytes")
    assert raw.event.data == BINARY
    assert raw.event.data_kind is DataKind.BINARY
    assert raw.event.datacontenttype == "application/octet-stream"
    assert delivered[1].event.event.data == BINARY


async def test_structured_mode_from_the_sdk_round_trips(
    server: EventBusServer, client: EventBusClient, http_url: str
) -> None:
    moment = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    json_event = sdk_event({"items": [1, 2], "city": "São Paulo"}, id="st-json", subject="o-1", time=moment, vip=True)
    bytes_event = sdk_event(BINARY, id="st-bytes", datacontenttype="application/octet-stream")
    json_message = to_structured(json_event, JSONFormat())
    assert json_message.headers["content-type"].startswith("application/cloudevents+json")

    status, body = await send(http_url, json_message)
    assert status == 202, body
    status, body = await send(http_url, to_structured(bytes_event, JSONFormat()))
    assert status == 202, body

    stored = await client.get_event(source="https://shop.example/orders", id="st-json")
    assert stored.event.subject == "o-1" and stored.event.time == moment
    assert dict(stored.event.extensions) == {"vip": True}
    assert stored.event.json_data() == {"items": [1, 2], "city": "São Paulo"}
    raw = await client.get_event(source="https://shop.example/orders", id="st-bytes")
    assert raw.event.data == BINARY

    listed = await stored_events(server)
    assert [s.event.id for s in listed] == ["st-json", "st-bytes"]


async def test_structured_mode_accepts_a_charset_and_ignores_ce_headers(server: EventBusServer, http_url: str) -> None:
    document = {"specversion": "1.0", "id": "cs-1", "source": "/s", "type": "t.x", "data": "plain"}
    headers = {"Content-Type": "application/cloudevents+json; charset=UTF-8", "ce-id": "ignored"}
    status, body = await post(http_url, json.dumps(document).encode(), headers)
    assert status == 202, body
    [stored] = await stored_events(server)
    assert stored.event.id == "cs-1"


async def test_a_hand_made_batch_is_stored_atomically_in_order_and_dedups(
    server: EventBusServer, client: EventBusClient, http_url: str
) -> None:
    batch = [
        {"specversion": "1.0", "id": f"b-{i}", "source": "/batch", "type": "batch.item", "data": {"n": i}}
        for i in range(3)
    ]
    batch.append(
        {"specversion": "1.0", "id": "b-raw", "source": "/batch", "type": "batch.raw", "data_base64": "AAEC/w=="}
    )
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    status, body = await post(http_url, json.dumps(batch).encode(), headers)
    assert status == 202, body
    answers = body["events"]
    assert isinstance(answers, list)
    assert [a["id"] for a in answers] == ["b-0", "b-1", "b-2", "b-raw"]
    assert [a["seq"] for a in answers] == sorted(a["seq"] for a in answers)
    assert not any(a["duplicate"] for a in answers)
    assert (await client.get_event(source="/batch", id="b-1")).event.json_data() == {"n": 1}
    assert (await client.get_event(source="/batch", id="b-raw")).event.data == b"\x00\x01\x02\xff"

    status, again = await post(http_url, json.dumps(batch).encode(), headers)
    assert status == 200, again  # every event a duplicate: a redelivery
    assert again["events"] == [{**a, "duplicate": True} for a in answers]

    batch.append({"specversion": "1.0", "id": "b-new", "source": "/batch", "type": "batch.item"})
    status, mixed = await post(http_url, json.dumps(batch).encode(), headers)
    assert status == 202, mixed
    assert [a["duplicate"] for a in mixed["events"]] == [True, True, True, True, False]  # type: ignore[union-attr]
    assert len(await stored_events(server)) == 5


async def test_a_repeated_binary_event_answers_200_with_the_original_ids(server: EventBusServer, http_url: str) -> None:
    message = to_binary(sdk_event(None, id="again"), JSONFormat())
    status, first = await send(http_url, message)
    assert status == 202, first
    status, second = await send(http_url, message)
    assert status == 200
    assert second["events"] == [{**first["events"][0], "duplicate": True}]  # type: ignore[index]
    [stored] = await stored_events(server)
    assert stored.event.data is None


async def test_binary_extensions_are_lower_cased_strings_and_empty_body_means_no_data(
    server: EventBusServer, http_url: str
) -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "ext-1",
        "ce-source": "/ext",
        "ce-type": "ext.made",
        "CE-Region": '"sa-east%2D1"',  # an RFC 7230 quoted string, unquoted before percent-decoding
        "ce-count": "7",
    }
    async with aiohttp.ClientSession() as http, http.post(f"{http_url}/events", headers=headers) as response:
        assert response.status == 202, await response.text()
    [stored] = await stored_events(server)
    assert dict(stored.event.extensions) == {"region": "sa-east-1", "count": "7"}
    assert stored.event.data is None
