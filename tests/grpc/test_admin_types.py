"""Event types over gRPC: the catalogue written with every append, JSON Schemas per type (set, get, delete, refused
when bad or remote), and validation at publish (INVALID_ARGUMENT naming `events[i].data`, atomic per batch), all
through the real in-process server, the Python client and the raw stub."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import timedelta

import grpc
import pytest

from eventbus.bus.schemas import MAX_SCHEMA_BYTES, SchemaCache
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.errors import InvalidArgumentError, NotFoundError, SchemaValidationError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from eventbus.store.types import event_type_store_of
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2, eventbus_pb2_grpc

from .helpers import ce, event, violations

ORDER_SCHEMA = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "integer", "minimum": 0}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
}


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return violations(caught.value)


async def stored_count(server: EventBusServer) -> int:
    events, _ = await server.bus.list_events(page_size=1000)
    return len(events)


# -- the catalogue ------------------------------------------------------------------------------------------------


async def test_counts_first_and_last_seen_and_the_last_sample(client: EventBusClient, clock: ManualClock) -> None:
    first_at = clock.now()
    [first] = await client.publish(event(data={"total": 1}, id="o-1"))
    clock.advance(timedelta(minutes=5))
    later = clock.now()
    results = await client.publish(
        [event(data={"total": 2}, id="o-2"), event("order.shipped", data="on its way"), event(data={"total": 3})]
    )
    await client.publish(event(data={"total": 99}, id="o-1"))  # a duplicate: neither counted nor sampled

    paid = await client.get_event_type("order.paid")
    assert (paid.count, paid.first_seen, paid.last_seen) == (3, first_at, later)
    assert paid.sample == {"total": 3} and paid.sample_event_id == results[2].event_id
    assert paid.sample_omitted is None and paid.schema is None
    assert first.event_id != paid.sample_event_id
    shipped = await client.get_event_type("order.shipped")
    assert (shipped.count, shipped.sample, shipped.sample_event_id) == (1, "on its way", results[1].event_id)

    listed, token = await client.list_event_types()
    assert [t.type for t in listed] == ["order.paid", "order.shipped"] and token == ""


async def test_large_and_binary_data_keep_no_sample(client: EventBusClient) -> None:
    await client.publish(event("blob.big", data={"text": "x" * 5000}))
    await client.publish(Event.create(type="blob.raw", source="/shop", data=b"\x00\xff"))
    await client.publish(Event.create(type="blob.none", source="/shop"))
    big, raw, none = [await client.get_event_type(t) for t in ("blob.big", "blob.raw", "blob.none")]
    assert (big.sample, big.sample_omitted, big.count) == (None, "too_large", 1)
    assert (raw.sample, raw.sample_omitted) == (None, "not_json")
    assert (none.sample, none.sample_omitted, none.sample_json) == (None, None, None)


async def test_system_events_are_catalogued_and_listed_by_pattern(
    client: EventBusClient, server: EventBusServer
) -> None:
    await client.publish([event("order.paid"), event("order.item.added"), event("invoice.sent")])
    await server.bus.publish(
        [Event.create(type="eventbus.endpoint.failing", source="/eventbus", data={"x": 1})], internal=True
    )
    everything, _ = await client.list_event_types()
    assert [t.type for t in everything] == [
        "eventbus.endpoint.failing",
        "invoice.sent",
        "order.item.added",
        "order.paid",
    ]

    async def names(pattern: str) -> list[str]:
        found, token = await client.list_event_types(pattern=pattern)
        assert token == ""
        return [t.type for t in found]

    assert await names("**") == ["invoice.sent", "order.item.added", "order.paid"]
    assert await names("order.*") == ["order.paid"]
    assert await names("order.**") == ["order.item.added", "order.paid"]
    assert await names("eventbus.**") == ["eventbus.endpoint.failing"]
    assert await names("*.sent") == ["invoice.sent"]

    pages: list[str] = []
    token = ""
    while True:
        page, token = await client.list_event_types(pattern="**", page_size=1, page_token=token)
        pages.extend(t.type for t in page)
        if not token:
            break
    assert pages == ["invoice.sent", "order.item.added", "order.paid"]


async def test_unknown_types_and_bad_names(client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub) -> None:
    with pytest.raises(NotFoundError):
        await client.get_event_type("never.seen")
    assert await refused(admin_stub.GetEventType(admin_pb2.GetEventTypeRequest(type="bad type")), _INVALID) == {
        "type": "segment 1 ('bad type') has characters outside [A-Za-z0-9_-]"
    }
    bad_token = admin_pb2.ListEventTypesRequest(page_token="nope")
    assert set(await refused(admin_stub.ListEventTypes(bad_token), _INVALID)) == {"page_token"}
    bad_pattern = admin_pb2.ListEventTypesRequest(pattern="order.**.x")
    assert set(await refused(admin_stub.ListEventTypes(bad_pattern), _INVALID)) == {"pattern[0]"}


_INVALID = grpc.StatusCode.INVALID_ARGUMENT


# -- schemas ------------------------------------------------------------------------------------------------------


async def test_set_get_and_delete_a_schema(client: EventBusClient, clock: ManualClock) -> None:
    await client.publish(event(data={"total": 1}))
    registered = await client.set_event_schema("order.paid", ORDER_SCHEMA)
    assert registered.schema == ORDER_SCHEMA and registered.schema_updated_at == clock.now()
    assert registered.count == 1
    assert (await client.get_event_type("order.paid")).schema == ORDER_SCHEMA
    listed, _ = await client.list_event_types()
    assert [t.schema for t in listed] == [ORDER_SCHEMA]

    await client.delete_event_schema("order.paid")
    kept = await client.get_event_type("order.paid")
    assert (kept.schema, kept.count) == (None, 1)  # the type stays in the catalogue
    with pytest.raises(NotFoundError):
        await client.delete_event_schema("order.paid")


async def test_a_schema_may_come_before_its_events(client: EventBusClient) -> None:
    ahead = await client.set_event_schema("lead.converted", json.dumps({"type": "object"}))
    assert (ahead.count, ahead.first_seen, ahead.last_seen, ahead.schema) == (0, None, None, {"type": "object"})
    await client.publish(event("lead.converted", data={"email": "a@example.com"}))
    seen = await client.get_event_type("lead.converted")
    assert seen.count == 1 and seen.first_seen is not None and seen.schema == {"type": "object"}
    await client.set_event_schema("nobody.sends", True)
    await client.delete_event_schema("nobody.sends")
    with pytest.raises(NotFoundError):  # registered ahead and removed: no trace is left
        await client.get_event_type("nobody.sends")


@pytest.mark.parametrize(
    ("schema", "detail"),
    [
        ('{"type": "nope"}', "$.type: 'nope' is not valid"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a JSON Schema is an object"),
        ('{"$schema": "http://json-schema.org/draft-07/schema#"}', "only draft 2020-12"),
        ('{"properties": {"a": {"$ref": "#/$defs/missing"}}}', "points at nothing"),
        ('{"pattern": "(?<=a)b"}', "does not compile in RE2 syntax"),
        (json.dumps({"description": "x" * MAX_SCHEMA_BYTES}), f"at most {MAX_SCHEMA_BYTES}"),
    ],
)
async def test_a_bad_schema_is_refused_naming_schema(
    admin_stub: admin_pb2_grpc.AdminStub, client: EventBusClient, schema: str, detail: str
) -> None:
    found = await refused(
        admin_stub.SetEventSchema(admin_pb2.SetEventSchemaRequest(type="order.paid", schema=schema)), _INVALID
    )
    assert list(found) == ["schema"] and detail in found["schema"], found
    with pytest.raises(NotFoundError):  # nothing registered
        await client.get_event_type("order.paid")


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "https://schemas.example.com/order.json"},
        {"properties": {"customer": {"$ref": "customer.json"}}},
        {"$id": "https://example.com/order", "items": {"$ref": "https://example.com/line"}},
    ],
)
async def test_a_remote_ref_is_refused(client: EventBusClient, schema: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.set_event_schema("order.paid", schema)
    [violation] = caught.value.violations
    assert violation.field == "schema" and "remote references are never fetched" in violation.detail


async def test_refs_inside_the_schema_are_fine(client: EventBusClient) -> None:
    schema = {
        "$id": "https://example.com/order",
        "$defs": {"money": {"$id": "money", "type": "integer", "minimum": 0}},
        "properties": {"total": {"$ref": "money"}, "tax": {"$ref": "#/$defs/money"}},
    }
    await client.set_event_schema("order.paid", schema)
    with pytest.raises(InvalidArgumentError):
        await client.publish(event(data={"total": 1, "tax": -1}))


async def test_schema_names_are_checked(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    for type_, field in (("eventbus.test", "type"), ("", "type"), ("a..b", "type"), ("order.paid", "schema")):
        request = admin_pb2.SetEventSchemaRequest(type=type_, schema="" if type_ == "order.paid" else "{}")
        assert list(await refused(admin_stub.SetEventSchema(request), _INVALID)) == [field]
    missing = admin_stub.DeleteEventSchema(admin_pb2.DeleteEventSchemaRequest(type="order.paid"))
    await refused(missing, grpc.StatusCode.NOT_FOUND)


# -- validation at publish ---------------------------------------------------------------------------------------


async def test_a_non_conforming_event_is_refused_and_a_conforming_one_accepted(
    client: EventBusClient, server: EventBusServer, stub: eventbus_pb2_grpc.EventBusStub
) -> None:
    await client.set_event_schema("order.paid", ORDER_SCHEMA)
    bad = ce(text=json.dumps({"total": -5}), datacontenttype="application/json")
    found = await refused(stub.Publish(eventbus_pb2.PublishRequest(events=[bad])), _INVALID)
    assert list(found) == ["events[0].data"]
    assert found["events[0].data"] == (
        "$.total: -5 is less than the minimum of 0 (schema of order.paid at #/properties/total/minimum)"
    )
    wrong_currency = await refused(
        stub.Publish(
            eventbus_pb2.PublishRequest(
                events=[ce(text='{"total": 1, "currency": "real"}', datacontenttype="application/json")]
            )
        ),
        _INVALID,
    )
    assert "#/properties/currency/pattern" in wrong_currency["events[0].data"]
    assert await stored_count(server) == 0

    good = ce(text=json.dumps({"total": 5, "currency": "BRL"}), datacontenttype="application/json")
    response = await stub.Publish(eventbus_pb2.PublishRequest(events=[good]))
    assert [r.duplicate for r in response.results] == [False]
    await client.publish(event("order.shipped", data="no schema for this type"))
    assert await stored_count(server) == 2


async def test_a_batch_with_one_bad_event_stores_nothing(client: EventBusClient, server: EventBusServer) -> None:
    await client.set_event_schema("order.paid", ORDER_SCHEMA)
    batch = [event(data={"total": 1}), event("order.shipped", data={}), event(data={"currency": "BRL"})]
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish(batch)
    assert [v.field for v in caught.value.violations] == ["events[2].data"]
    assert "'total' is a required property" in caught.value.message
    assert await stored_count(server) == 0
    listed, _ = await client.list_event_types()
    assert [(t.type, t.count) for t in listed] == [("order.paid", 0)]  # not even the catalogue moved


async def test_data_that_is_not_json_fails_any_schema(client: EventBusClient) -> None:
    await client.set_event_schema("order.paid", {"type": "string"})
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish(Event.create(type="order.paid", source="/shop", data=b"\x00\x01"))
    assert "must be JSON" in caught.value.violations[0].detail
    await client.publish(Event.create(type="order.paid", source="/shop", data="text data is a JSON string"))
    with pytest.raises(InvalidArgumentError):  # no data validates as null
        await client.publish(Event.create(type="order.paid", source="/shop"))


async def test_system_and_internal_events_are_not_validated(server: EventBusServer, client: EventBusClient) -> None:
    await client.set_event_schema("order.paid", ORDER_SCHEMA)
    bus_own = Event.create(type="order.paid", source="/eventbus", data={"total": "not a number"})
    [result] = await server.bus.publish([bus_own], internal=True)
    assert not result.duplicate
    with pytest.raises(InvalidArgumentError):  # and no schema can be given to a system type
        await server.services.types.set_schema("eventbus.endpoint.failing", {"type": "string"})


async def test_the_cache_sees_changes_made_by_the_service_at_once(
    client: EventBusClient, server: EventBusServer
) -> None:
    [cached] = await client.publish(event(data={"total": -1}))  # loads the (empty) cache
    await client.set_event_schema("order.paid", ORDER_SCHEMA)
    with pytest.raises(InvalidArgumentError):
        await client.publish(event(data={"total": -1}))
    await client.delete_event_schema("order.paid")
    await client.publish(event(data={"total": -1}))
    assert not cached.duplicate


async def test_the_cache_reloads_what_another_process_changed(server: EventBusServer) -> None:
    """A change written to the store behind this process's back is seen once the refresh interval has passed."""
    store = event_type_store_of(server.store)
    patient = SchemaCache(store, refresh_every=3600.0)
    eager = SchemaCache(store, refresh_every=0.0)
    bad = [event(data={"total": -1})]
    await patient.check(bad)
    await eager.check(bad)
    await store.set_event_schema("order.paid", json.dumps(ORDER_SCHEMA), now=server.bus.clock.now())
    await patient.check(bad)  # within its interval: the old (empty) set
    with pytest.raises(SchemaValidationError):
        await eager.check(bad)
    patient.invalidate()
    with pytest.raises(SchemaValidationError):
        await patient.check(bad)


async def test_admin_scope_is_required(server: EventBusServer) -> None:
    admin_key = (await server.services.api_keys.create(["admin"])).key
    publish_key = (await server.services.api_keys.create(["publish"])).key
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), api_key=publish_key) as publisher:
        with pytest.raises(Exception, match="admin"):
            await publisher.list_event_types()
    async with EventBusClient(str(server.addresses.grpc), api_key=admin_key) as admin:
        assert (await admin.list_event_types()) == ([], "")
