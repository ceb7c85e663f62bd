"""Input that once broke a listing for everyone or stalled the server: lone surrogates, deep nesting, a
`uniqueItems` schema over a large array, odd digits; each is refused (or handled) and nothing is stored half-way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventbus.bus.schemas import check_event, compile_schema
from eventbus.errors import SchemaValidationError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from tests.rest.helpers import Rest, ok, problem


def ce(n: int, data: Any, type: str = "order.paid") -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"h{n}", "source": "/shop", "type": type, "data": data}


async def test_a_lone_surrogate_is_refused_and_the_listings_stay_whole(server: EventBusServer, rest: Rest) -> None:
    raw = b'{"url": "http://127.0.0.1:9/\\ud800"}'
    problem(await rest.post("/v1/endpoints", body=raw, content_type="application/json"), 400, "body")
    headers = b'{"url": "http://127.0.0.1:9/", "headers": {"x-a": "\\udfff"}}'
    problem(await rest.post("/v1/endpoints", body=headers, content_type="application/json"), 400, "body")
    assert ok(await rest.get("/v1/subscriptions"))["items"] == []
    pair = b'{"events": [{"specversion": "1.0", "id": "ok", "source": "/s", "type": "a.b", "data": "\\ud83d\\ude00"}]}'
    ok(await rest.post("/v1/events", body=pair, content_type="application/json"), 201)  # a real pair is fine


async def test_deeply_nested_data_is_refused_on_publish_and_the_listings_stay_whole(
    server: EventBusServer, rest: Rest
) -> None:
    deep: Any = 1
    for _ in range(500):
        deep = [deep]
    refused = problem(await rest.post("/v1/events", {"events": [ce(1, deep)]}), 400, "body")
    assert "nested deeper than 128" in refused["detail"]
    structured = json.dumps(ce(1, deep)).encode()  # POST /events (CloudEvents): the event's own limit
    answer = await rest.request(
        "POST", "/events", body=structured, content_type="application/cloudevents+json", params=None
    )
    problem(answer, 400, "data")
    shallow: Any = 1
    for _ in range(100):
        shallow = {"a": shallow}
    ok(await rest.post("/v1/events", {"events": [ce(2, shallow)]}), 201)
    ok(await rest.get("/v1/events"))
    ok(await rest.get("/v1/event-types"))
    too_deep_body = json.dumps({"options": deep, "kind": "webhook"}).encode()
    problem(await rest.post("/v1/subscriptions", body=too_deep_body, content_type="application/json"), 400, "body")


async def test_unique_items_is_checked_in_linear_time_and_as_json_compares() -> None:
    schema = compile_schema({"properties": {"items": {"uniqueItems": True}}})
    many = [{"sku": f"s{n}", "n": [n]} for n in range(20_000)]  # pairwise comparison would take many minutes
    check_event(Event.create(type="u.x", source="/s", data={"items": many}), schema, "data")
    for equal in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}], [{"a": 1, "b": 2}, {"b": 2, "a": 1}]):
        with pytest.raises(SchemaValidationError, match="non-unique"):
            check_event(Event.create(type="u.x", source="/s", data={"items": equal}), schema, "data")
    for distinct in ([True, 1], [False, 0, None], ["1", 1]):
        check_event(Event.create(type="u.x", source="/s", data={"items": distinct}), schema, "data")


async def test_page_sizes_take_ascii_digits_only(rest: Rest) -> None:
    for odd in ("１", "1_0", " 1", "+1", "1e2"):
        problem(await rest.get("/v1/subscriptions", params={"page_size": odd}), 400, "page_size")
    ok(await rest.get("/v1/subscriptions", params={"page_size": "10"}))


async def test_deliveries_list_newest_first(server: EventBusServer, rest: Rest) -> None:
    ok(await rest.post("/v1/endpoints", {"url": "http://127.0.0.1:9/never"}), 201)
    ok(await rest.post("/v1/events", {"events": [ce(n, {"n": n}) for n in range(5)]}), 201)
    oldest = [d["id"] for d in ok(await rest.get("/v1/deliveries"))["items"]]
    newest: list[str] = []
    token = ""
    while True:
        page = ok(await rest.get("/v1/deliveries", params={"order": "newest", "page_size": "2", "page_token": token}))
        newest += [d["id"] for d in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(oldest) == 5 and newest == list(reversed(oldest))
    problem(await rest.get("/v1/deliveries", params={"order": "sideways"}), 400, "order")
