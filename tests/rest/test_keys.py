"""REST API keys: create (the key shown once, and it works), list page by page (never the key), revoke (refused
from the next call on); every answer against what the service layer holds."""

from __future__ import annotations

from typing import Any

from eventbus.bus.keys import KeyInfo
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from tests.rest.helpers import Rest, conforms, ok, problem, walk


def assert_shows(shown: dict[str, Any], info: KeyInfo) -> None:
    assert (shown["id"], shown["name"]) == (info.key_id, info.name)
    assert shown["scopes"] == [s.value for s in info.scopes]
    assert shown["created_at"] == format_rfc3339(info.created_at)
    assert shown["revoked_at"] == (format_rfc3339(info.revoked_at) if info.revoked_at else None)


async def stored_keys(server: EventBusServer, include_revoked: bool = True) -> dict[str, KeyInfo]:
    found, _ = await server.services.api_keys.list(include_revoked=include_revoked, page_size=1000)
    return {k.key_id: k for k in found}


async def test_create_shows_the_key_once_and_it_works(server: EventBusServer, rest: Rest) -> None:
    reply = await rest.post("/v1/keys", {"scopes": ["publish", "subscribe"], "name": "shop backend"})
    created = conforms(reply, "POST", "/v1/keys")
    assert reply.status == 201
    key = created["key"]
    assert key.startswith("ebk_" + created["id"].removeprefix("key_") + "_")
    assert_shows(created, (await stored_keys(server))[created["id"]])
    assert created["scopes"] == ["publish", "subscribe"] and created["revoked_at"] is None

    listed = await rest.get("/v1/keys")
    assert key not in listed.text and "key" not in ok(listed)["items"][0]
    problem(await rest.with_key(key).get("/v1/keys"), 403)  # it authenticates, without admin
    published = await rest.with_key(key).post(
        "/v1/events", {"events": [{"specversion": "1.0", "id": "1", "source": "/shop", "type": "order.paid"}]}
    )
    assert published.status == 201, published.text

    admin = ok(await rest.post("/v1/keys", {"scopes": ["admin"]}), 201)
    assert admin["name"] == "" and admin["scopes"] == ["admin"]
    assert ok(await rest.with_key(admin["key"]).get("/v1/keys"))["items"]

    for body, field in (
        ({}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"scopes": "admin"}, "scopes"),
        ({"scopes": ["admin"], "name": "x" * 201}, "name"),
        ({"scopes": ["admin"], "name": 7}, "name"),
        ({"scopes": ["admin"], "expires": "never"}, "expires"),
    ):
        problem(await rest.post("/v1/keys", body), 400, field)
    assert len(await stored_keys(server)) == 2


async def test_list_walks_every_key_once_and_revoked_ones_when_asked(server: EventBusServer, rest: Rest) -> None:
    created = [ok(await rest.post("/v1/keys", {"scopes": ["publish"], "name": f"k{n}"}), 201) for n in range(5)]
    ok(await rest.delete(f"/v1/keys/{created[0]['id']}"))

    active = await walk(rest, "/v1/keys", page_size=2)
    assert [k["id"] for k in active] == [c["id"] for c in created[1:]]
    everything = await walk(rest, "/v1/keys", page_size=2, params={"include_revoked": "true"})
    assert [k["id"] for k in everything] == [c["id"] for c in created]
    stored = await stored_keys(server)
    for shown in everything:
        assert_shows(shown, stored[shown["id"]])
        assert "key" not in shown
    assert [k["id"] for k in await walk(rest, "/v1/keys", page_size=9, params={"include_revoked": "no"})] == [
        k["id"] for k in active
    ]
    problem(await rest.get("/v1/keys", params={"include_revoked": "maybe"}), 400, "include_revoked")


async def test_revoke_refuses_the_key_from_the_next_call_on(server: EventBusServer, rest: Rest) -> None:
    created = ok(await rest.post("/v1/keys", {"scopes": ["admin"], "name": "ops"}), 201)
    assert (await rest.with_key(created["key"]).get("/v1/keys")).status == 200

    reply = await rest.delete(f"/v1/keys/{created['id']}")
    revoked = conforms(reply, "DELETE", "/v1/keys/{key_id}")
    assert_shows(revoked, (await stored_keys(server))[created["id"]])
    assert revoked["revoked_at"] == format_rfc3339(server.bus.clock.now())
    problem(await rest.with_key(created["key"]).get("/v1/keys"), 401)
    assert created["id"] not in await stored_keys(server, include_revoked=False)

    again = ok(await rest.delete(f"/v1/keys/{created['id']}"))  # revoking a revoked key changes nothing
    assert again["revoked_at"] == revoked["revoked_at"]
    problem(await rest.delete("/v1/keys/key_nothing"), 404)
