"""Bad input on every kind of REST route, each refused as problem+json naming what is wrong: malformed JSON, a
wrong content type, a body that is no object, unknown fields, wrong types, an oversized body, unknown ids,
page sizes out of range, page tokens this server never issued, times that are no RFC 3339 timestamps.

The generic cases run over every operation `/openapi.json` declares (a new route is covered by being declared);
the cases that need a valid request use the resources of `world`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from eventbus.bus.groups import JoinRequest
from eventbus.bus.sources import SourceInput
from eventbus.http.rest import build_api
from eventbus.http.rest.api import MAX_BODY, Operation
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import MakeReceiver, create_endpoint, delivery_of, order, publish, wait_state
from tests.rest.helpers import Rest, problem

OPERATIONS = build_api().operations
# Operations whose path names something that need not exist yet.
NOT_LOOKUPS = {"setEventSchema"}  # registers a schema for a type before any event of it is seen
WITH_BODY = [o for o in OPERATIONS if o.body is not None]
LISTINGS = [o for o in OPERATIONS if any(p.name == "page_size" for p in o.query)]
WITH_IDS = [o for o in OPERATIONS if "{" in o.path and o.operation_id not in NOT_LOOKUPS]
T = "2026-01-01T00:00:00Z"
# A body each operation accepts (given the world's resources), so that only the id can be wrong.
VALID_BODIES: dict[str, Any] = {
    "updateSubscription": {},
    "recoverSubscription": {"since": T},
    "replaySubscription": {"since": T},
    "seekGroup": {"to": "earliest"},
    "updateSource": {},
    "setEventSchema": {"schema": {"type": "object"}},
}
UNKNOWN_IDS = {
    "subscription_id": "sub_0000000000000000000000000",
    "delivery_id": "dlv_0000000000000000000000000",
    "source": "no-such-source",
    "group": "no-such-group",
    "event_id": "evt_0000000000000000000000000",
    "key_id": "key_0000000000000000000000000",
    "type": "no.such.type",
}


def ids(operations: list[Operation]) -> list[str]:
    return [o.operation_id for o in operations]


@dataclass
class World:
    """One of each resource, by the name of the path parameter that names it."""

    ids: dict[str, str]

    def path(self, operation: Operation, ids: dict[str, str] | None = None) -> str:
        found = {**self.ids, **(ids or {})}
        path = operation.path
        for name, value in found.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"{operation.operation_id}: no value for a parameter of {operation.path}"
        return path


@pytest.fixture
async def world(server: EventBusServer, receiver: MakeReceiver) -> World:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order(1))
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    await wait_state(server, delivery.delivery_id, "succeeded")
    await server.services.sources.create(SourceInput(name="billing", connector="standardwebhooks"))
    session = await server.services.groups.join(JoinRequest(group="billing"))
    await session.close()
    key = await server.services.api_keys.create(["publish"], name="publisher")
    return World(
        {
            "subscription_id": endpoint.subscription.id,
            "delivery_id": delivery.delivery_id,
            "source": "billing",
            "group": "billing",
            "event_id": published.event_id,
            "key_id": key.info.key_id,
            "type": "order.paid",
        }
    )


# -- bodies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", WITH_BODY, ids=ids(WITH_BODY))
async def test_malformed_json_is_refused_naming_the_body(operation: Operation, world: World, rest: Rest) -> None:
    # NaN, Infinity and numbers that overflow to infinity are no JSON numbers (RFC 8259); kept in a plugin's
    # options they would make every later answer that shows them unparseable.
    for text in (
        b"{",
        b'{"a": }',
        b"{'single': 'quotes'}",
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": 1e400}',
    ):
        reply = await rest.request(operation.method, world.path(operation), body=text, content_type="application/json")
        problem(reply, 400, "body")


@pytest.mark.parametrize("operation", WITH_BODY, ids=ids(WITH_BODY))
async def test_a_body_that_is_not_json_is_refused_as_unsupported(
    operation: Operation, world: World, rest: Rest
) -> None:
    for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        reply = await rest.request(operation.method, world.path(operation), body=b"{}", content_type=media)
        problem(reply, 415)


@pytest.mark.parametrize("operation", WITH_BODY, ids=ids(WITH_BODY))
async def test_a_body_that_is_not_an_object_is_refused(operation: Operation, world: World, rest: Rest) -> None:
    for document in ([], [{}], "text", 7, True, None):
        reply = await rest.request(operation.method, world.path(operation), json=document)
        problem(reply, 400, "body")


@pytest.mark.parametrize("operation", WITH_BODY, ids=ids(WITH_BODY))
async def test_unknown_fields_are_refused_by_name(operation: Operation, world: World, rest: Rest) -> None:
    body = {**VALID_BODIES.get(operation.operation_id, {}), "surprise": 1}
    problem(await rest.request(operation.method, world.path(operation), json=body), 400, "surprise")


@pytest.mark.parametrize("operation", WITH_BODY, ids=ids(WITH_BODY))
async def test_an_oversized_body_is_refused_before_it_is_read(operation: Operation, world: World, rest: Rest) -> None:
    big = json.dumps({"padding": "x" * MAX_BODY}).encode()
    problem(await rest.request(operation.method, world.path(operation), body=big, content_type="application/json"), 413)
    if operation.idempotent:  # the Idempotency-Key path reads the body itself
        reply = await rest.request(
            operation.method,
            world.path(operation),
            body=big,
            content_type="application/json",
            headers={"Idempotency-Key": "big"},
        )
        problem(reply, 413)


async def test_a_required_body_must_be_there(world: World, rest: Rest) -> None:
    required = [o for o in WITH_BODY if o.body_required]
    for operation in required:
        problem(await rest.request(operation.method, world.path(operation)), 400, "body")
        problem(await rest.request(operation.method, world.path(operation), body=b"  \n"), 400, "body")


WRONG_TYPES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/subscriptions", {"kind": 7}, "kind"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "patterns": [1]}, "patterns"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "options": []}, "options"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "paused": "yes"}, "paused"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "rate_limit": "fast"}, "rate_limit"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "max_concurrency": 1.5}, "max_concurrency"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "retry_schedule": 5}, "retry_schedule"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "max_pending_age": True}, "max_pending_age"),
    ("POST", "/v1/subscriptions", {"kind": "webhook", "filter": {"a": 1}}, "filter"),
    ("POST", "/v1/endpoints", {"url": ["http://127.0.0.1/"]}, "options.url"),
    ("POST", "/v1/endpoints", {"url": "http://127.0.0.1/", "ordering": "random"}, "ordering"),
    ("PATCH", "/v1/subscriptions/{subscription_id}", {"rate_limit": -1}, "rate_limit"),
    ("PATCH", "/v1/subscriptions/{subscription_id}", {"patterns": [None]}, "patterns"),
    ("POST", "/v1/subscriptions/{subscription_id}/rotate-secret", {"secret": ["whsec_x"]}, "secret"),
    ("POST", "/v1/subscriptions/{subscription_id}/recover", {"since": 1700000000}, "since"),
    ("POST", "/v1/subscriptions/{subscription_id}/replay", {"since": T, "patterns": "a.*"}, "patterns"),
    ("POST", "/v1/sources", {"name": "x", "connector": "hmac", "secrets": "s"}, "secrets"),
    ("PATCH", "/v1/sources/{source}", {"rate_limit": "1/s"}, "rate_limit"),
    ("PATCH", "/v1/sources/{source}", {"options": "x"}, "options"),
    ("POST", "/v1/groups/{group}/seek", {"to": 1}, "to"),
    ("POST", "/v1/groups/{group}/seek", {"to": "seq", "seq": True}, "seq"),
    ("POST", "/v1/groups/{group}/seek", {"to": "seq", "seq": 2**63}, "seq"),  # beyond what the store holds
    ("POST", "/v1/subscriptions", {"kind": "webhook", "max_concurrency": -(2**63) - 1}, "max_concurrency"),
    ("POST", "/v1/events", {"events": [1]}, "events[0]"),
    ("POST", "/v1/keys", {"scopes": [1]}, "scopes"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"), WRONG_TYPES, ids=[f"{m} {p} {f}" for m, p, _, f in WRONG_TYPES]
)
async def test_wrong_types_are_refused_by_name(
    method: str, path: str, body: dict[str, Any], field: str, world: World, rest: Rest
) -> None:
    [operation] = [o for o in OPERATIONS if (o.method, o.path) == (method, path)]
    problem(await rest.request(method, world.path(operation), json=body), 400, field)


# -- ids, pages, times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", WITH_IDS, ids=ids(WITH_IDS))
async def test_unknown_ids_are_not_found(operation: Operation, world: World, rest: Rest) -> None:
    body = VALID_BODIES.get(operation.operation_id)
    if operation.body is not None and operation.body_required and body is None:
        pytest.fail(f"{operation.operation_id}: add a valid body to VALID_BODIES")
    params = {"event_id": world.ids["event_id"]} if operation.operation_id == "explainDelivery" else None
    kwargs: dict[str, Any] = {"params": params} if body is None else {"params": params, "json": body}
    for unknown in (UNKNOWN_IDS, {name: "x.y" for name in UNKNOWN_IDS}):
        reply = await rest.request(operation.method, world.path(operation, unknown), **kwargs)
        problem(reply, 404)


@pytest.mark.parametrize("operation", LISTINGS, ids=ids(LISTINGS))
async def test_page_size_out_of_range_is_refused(operation: Operation, world: World, rest: Rest) -> None:
    for size in ("-1", "1001", "ten", "1.5", ""):
        problem(await rest.get(world.path(operation), params={"page_size": size}), 400, "page_size")
    problem(await rest.get(world.path(operation), params=[("page_size", "1"), ("page_size", "2")]), 400, "page_size")
    for size in ("0", "1", "1000"):
        assert (await rest.get(world.path(operation), params={"page_size": size})).status == 200


@pytest.mark.parametrize("operation", LISTINGS, ids=ids(LISTINGS))
async def test_a_page_token_this_server_never_issued_is_refused(operation: Operation, world: World, rest: Rest) -> None:
    for token in ("@@@", "not-a-token", "c2VxOi0x", "sub_"):
        problem(await rest.get(world.path(operation), params={"page_token": token}), 400, "page_token")


TIMES: list[tuple[str, str, str]] = [
    ("recoverSubscription", "body", "since"),
    ("replaySubscription", "body", "since"),
    ("seekGroup", "body", "time"),
    ("listEvents", "query", "received_after"),
    ("listEvents", "query", "received_before"),
]


@pytest.mark.parametrize(("operation_id", "where", "name"), TIMES, ids=[f"{o} {n}" for o, _, n in TIMES])
async def test_bad_times_are_refused_by_name(
    operation_id: str, where: str, name: str, world: World, rest: Rest
) -> None:
    [operation] = [o for o in OPERATIONS if o.operation_id == operation_id]
    for text in ("yesterday", "2026-01-01", "2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z", ""):
        if where == "query":
            reply = await rest.get(world.path(operation), params={name: text})
            if text == "":
                continue  # an empty filter is no filter
        else:
            body = {"to": "time", name: text} if operation_id == "seekGroup" else {name: text}
            reply = await rest.request(operation.method, world.path(operation), json=body)
        problem(reply, 400, name)


# -- the frame ---------------------------------------------------------------------------------------------------


async def test_no_key_a_bad_key_and_a_key_without_the_scope(world: World, rest: Rest, server: EventBusServer) -> None:
    publisher = (await server.services.api_keys.create(["publish"])).key
    for operation in OPERATIONS:
        path = world.path(operation)
        unauthenticated = problem(await rest.with_key(None).request(operation.method, path), 401)
        assert "API key" in unauthenticated["detail"]
        problem(await rest.with_key("ebk_nobody_secret").request(operation.method, path), 401)
        if operation.operation_id != "publishEvents":
            problem(await rest.with_key(publisher).request(operation.method, path), 403)
    reply = await rest.with_key(None).get("/v1/keys")
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="eventbus"'


async def test_unknown_routes_and_methods_answer_problems(world: World, rest: Rest) -> None:
    problem(await rest.get("/v1/nothing"), 404)
    reply = await rest.request("PUT", "/v1/subscriptions")
    problem(reply, 405)
    assert set(reply.headers["Allow"].split(",")) >= {"GET", "POST"}
