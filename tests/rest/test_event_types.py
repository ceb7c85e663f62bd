"""`/v1/event-types`: the catalogue of types seen (count, first and last seen, a sample) and registered schemas,
which then refuse a non-conforming event on every publish path (422 here) and accept a conforming one."""

from __future__ import annotations

from typing import Any

from eventbus.runtime import EventBusServer
from tests.rest.helpers import Rest, conforms, ok, problem, walk

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "number", "minimum": 0}},
}


def ce(n: int, type: str = "order.paid", data: Any = None) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e{n}", "source": "/shop", "type": type, "data": data or {"total": n}}


async def test_the_catalogue_counts_types_and_keeps_the_last_sample(server: EventBusServer, rest: Rest) -> None:
    ok(await rest.post("/v1/events", {"events": [ce(1), ce(2), ce(3, "order.refunded")]}), 201)
    listed = conforms(await rest.get("/v1/event-types", params={"pattern": "order.*"}), "GET", "/v1/event-types")
    by_type = {item["type"]: item for item in listed["items"]}
    assert (by_type["order.paid"]["count"], by_type["order.refunded"]["count"]) == (2, 1)
    assert by_type["order.paid"]["sample"] == {"total": 2}
    assert by_type["order.paid"]["schema"] is None
    one = conforms(await rest.get("/v1/event-types/order.paid"), "GET", "/v1/event-types/{type}")
    assert one["first_seen"] is not None and one["last_seen"] >= one["first_seen"]
    problem(await rest.get("/v1/event-types/never.seen"), 404)
    problem(await rest.get("/v1/event-types/not a type!"), 400)
    assert [t["type"] for t in await walk(rest, "/v1/event-types", page_size=1, params={"pattern": "order.*"})] == [
        "order.paid",
        "order.refunded",
    ]


async def test_a_registered_schema_refuses_a_bad_event_and_accepts_a_good_one(
    server: EventBusServer, rest: Rest
) -> None:
    path = "/v1/event-types/order.paid/schema"
    registered = conforms(await rest.put(path, {"schema": SCHEMA}), "PUT", "/v1/event-types/{type}/schema")
    assert registered["schema"] == SCHEMA and registered["count"] == 0  # registered ahead of its events

    refused = problem(await rest.post("/v1/events", {"events": [ce(1, data={"total": -5})]}), 422, "events[0].data")
    assert "minimum" in refused["detail"]
    assert (await server.bus.list_events())[0] == []  # nothing stored
    ok(await rest.post("/v1/events", {"events": [ce(2, data={"total": 10})]}), 201)

    ok(await rest.delete(path), 204)
    problem(await rest.delete(path), 404)
    ok(await rest.post("/v1/events", {"events": [ce(3, data={"total": -5})]}), 201)  # no schema: accepted


async def test_a_bad_schema_is_refused_naming_the_field(rest: Rest) -> None:
    path = "/v1/event-types/order.paid/schema"
    problem(await rest.put(path, {"schema": {"type": "nonsense"}}), 400, "schema")
    problem(await rest.put(path, {"schema": {"$ref": "https://example.com/remote.json"}}), 400, "schema")
    problem(await rest.put(path, {}), 400, "schema")
    problem(await rest.put("/v1/event-types/eventbus.endpoint.failing/schema", {"schema": True}), 400, "type")
