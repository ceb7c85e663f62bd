"""`POST /events` against a registered JSON Schema: a non-conforming event is a 422 problem+json naming
`events[i].data`, nothing of the request is stored; a conforming one is accepted."""

from __future__ import annotations

import json

from eventbus.runtime import EventBusServer
from tests.http.helpers import fields, post, stored_events

SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "integer", "minimum": 0}}}
STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def cloudevent(id: str, data: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": id, "source": "/shop", "type": "order.paid", "data": data}


async def test_a_non_conforming_event_is_422_problem_json(server: EventBusServer, http_url: str) -> None:
    await server.services.types.set_schema("order.paid", SCHEMA)
    status, problem = await post(http_url, json.dumps(cloudevent("o-1", {"total": -1})).encode(), STRUCTURED)
    assert status == 422, problem
    assert problem["status"] == 422 and problem["title"] == "Schema validation failed"
    assert fields(problem) == ["events[0].data"]
    assert "#/properties/total/minimum" in problem["errors"][0]["detail"]

    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "o-2", "ce-source": "/shop"}
    status, problem = await post(http_url, b'{"total": "ten"}', {**headers, "ce-type": "order.paid"})
    assert status == 422 and fields(problem) == ["events[0].data"]
    assert await stored_events(server) == []

    status, answer = await post(http_url, json.dumps(cloudevent("o-3", {"total": 10})).encode(), STRUCTURED)
    assert status == 202, answer


async def test_a_batch_with_one_bad_event_stores_nothing(server: EventBusServer, http_url: str) -> None:
    await server.services.types.set_schema("order.paid", SCHEMA)
    batch = [cloudevent("o-1", {"total": 1}), cloudevent("o-2", {})]
    status, problem = await post(http_url, json.dumps(batch).encode(), BATCH)
    assert status == 422 and fields(problem) == ["events[1].data"]
    assert "'total' is a required property" in problem["detail"]
    assert await stored_events(server) == []
