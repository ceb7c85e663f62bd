"""`POST /hooks/{source}` against a registered JSON Schema: a provider event that does not validate makes the
request a 422 problem+json, and nothing of it (events, raw request) is stored."""

from __future__ import annotations

from eventbus.bus.sources import SourceInfo
from eventbus.runtime import EventBusServer
from eventbus.store.sources import source_store_of
from tests.hooks.test_hooks import delivery, post, stored


async def test_a_provider_event_refused_by_the_schema_is_422_and_stores_nothing(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    await server.services.types.set_schema(
        "signed.item", {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
    )
    status, problem, headers = await post(http_url, delivery("d-1", {"id": "c-1", "total": 1}, {"id": "c-2"}))
    assert status == 422, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in problem["errors"]] == ["events[1].data"]
    assert "'total' is a required property" in problem["errors"][0]["detail"]
    assert await stored(server) == []
    assert await source_store_of(server.store).find_request(1) is None  # no raw request kept either

    status, answer, _ = await post(http_url, delivery("d-2", {"id": "c-1", "total": 1}))
    assert status == 202, answer
    assert [e["id"] for e in answer["events"]] == ["d-2.0"]
