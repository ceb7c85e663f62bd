"""REST consumer groups (joined over gRPC): list page by page, get with its backlog and live streams, seek to a
seq, a time or an edge, delete; every answer against what the service layer holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from eventbus.bus.groups import GroupInfo, JoinRequest
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import eventually, order, publish
from tests.grpc.helpers import Consumer
from tests.rest.helpers import ADMIN_KEY, Rest, conforms, ok, problem, walk

GROUP = "/v1/groups/{group}"


@pytest.fixture
async def client(server: EventBusServer) -> AsyncIterator[EventBusClient]:
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), api_key=ADMIN_KEY, timeout=10) as connected:
        yield connected


def assert_shows(shown: dict[str, Any], info: GroupInfo) -> None:
    sub = info.subscription
    assert (shown["name"], shown["id"]) == (info.name, sub.id)
    assert shown["patterns"] == list(sub.patterns) and shown["filter"] == sub.filter_json
    assert shown["active_streams"] == info.active_streams
    assert shown["created_at"] == format_rfc3339(sub.created_at)
    assert shown["stats"]["pending"] == info.stats.pending and shown["stats"]["succeeded"] == info.stats.succeeded


async def test_a_joined_group_is_listed_and_shown_with_its_streams(
    server: EventBusServer, rest: Rest, client: EventBusClient
) -> None:
    async with Consumer(client.subscribe("billing", ["order.*"], start="earliest")) as consumer:
        await publish(server, order(1))
        delivery = await consumer.next()

        listed = await walk(rest, "/v1/groups", page_size=10)
        assert [g["name"] for g in listed] == ["billing"]
        shown = conforms(await rest.get("/v1/groups/billing"), "GET", GROUP)
        info = await server.services.groups.get("billing")
        assert_shows(shown, info)
        assert (shown["active_streams"], shown["patterns"]) == (1, ["order.*"])
        assert shown == ok(await rest.get(f"/v1/groups/{info.subscription.id}"))  # by id too
        await delivery.ack()

        async def acked() -> dict[str, Any]:
            found = ok(await rest.get("/v1/groups/billing"))
            return found if found["stats"]["succeeded"] == 1 else {}

        await eventually(acked, what="the ack counted")

    async def left() -> dict[str, Any]:
        found = ok(await rest.get("/v1/groups/billing"))
        return found if found["active_streams"] == 0 else {}

    await eventually(left, what="the stream left")
    problem(await rest.get("/v1/groups/nobody"), 404)
    problem(await rest.get("/v1/groups/sub_0000000000000000000000000"), 404)


async def test_list_walks_every_group_once(server: EventBusServer, rest: Rest) -> None:
    for n in range(5):
        session = await server.services.groups.join(JoinRequest(group=f"group-{n}", patterns=("order.*",)))
        await session.close()
    listed = await walk(rest, "/v1/groups", page_size=2)
    assert sorted(g["name"] for g in listed) == [f"group-{n}" for n in range(5)]
    for shown in listed:
        assert_shows(shown, await server.services.groups.get(shown["name"]))
    problem(await rest.get("/v1/groups", params={"page_token": "nonsense"}), 400, "page_token")


async def test_seek_moves_the_group_and_the_stream_follows(
    server: EventBusServer, rest: Rest, client: EventBusClient, clock: ManualClock
) -> None:
    first = await publish(server, order(1), order(2))
    clock.advance(timedelta(minutes=5))
    middle = clock.now()
    later = await publish(server, order(3))
    async with Consumer(client.subscribe("billing", ["order.*"], start="latest")) as consumer:
        reply = await rest.post("/v1/groups/billing/seek", {"to": "seq", "seq": first[1].seq})
        shown = conforms(reply, "POST", GROUP + "/seek")
        info = await server.services.groups.get("billing")
        assert (shown["name"], shown["id"], shown["active_streams"]) == ("billing", info.subscription.id, 1)
        got = [await consumer.next() for _ in range(2)]
        assert [d.event.event_id for d in got] == [first[1].event_id, later[0].event_id]
        for delivery in got:
            await delivery.ack()

        ok(await rest.post("/v1/groups/billing/seek", {"to": "time", "time": format_rfc3339(middle)}))
        again = await consumer.next()
        assert again.event.event_id == later[0].event_id
        await again.ack()

        ok(await rest.post("/v1/groups/billing/seek", {"to": "earliest"}))
        replayed = [await consumer.next() for _ in range(3)]
        assert [d.event.event_id for d in replayed] == [r.event_id for r in (*first, *later)]
        for delivery in replayed:
            await delivery.ack()
        ok(await rest.post("/v1/groups/billing/seek", {"to": "latest"}))

    seek = "/v1/groups/billing/seek"
    problem(await rest.post(seek, {}), 400, "to")
    problem(await rest.post(seek, {"to": "middle"}), 400, "to")
    problem(await rest.post(seek, {"to": "seq"}), 400, "seq")
    problem(await rest.post(seek, {"to": "seq", "seq": 0}), 400, "seq")
    problem(await rest.post(seek, {"to": "seq", "seq": "3"}), 400, "seq")
    problem(await rest.post(seek, {"to": "time"}), 400, "time")
    problem(await rest.post(seek, {"to": "time", "time": "noon"}), 400, "time")
    problem(await rest.post(seek, {"to": "earliest", "from": "x"}), 400, "from")
    problem(await rest.post("/v1/groups/nobody/seek", {"to": "earliest"}), 404)


async def test_delete_a_group(server: EventBusServer, rest: Rest) -> None:
    session = await server.services.groups.join(JoinRequest(group="billing"))
    await session.close()
    reply = await rest.delete("/v1/groups/billing")
    assert conforms(reply, "DELETE", GROUP) is None and reply.status == 204
    problem(await rest.get("/v1/groups/billing"), 404)
    problem(await rest.delete("/v1/groups/billing"), 404)
    assert ok(await rest.get("/v1/groups"))["items"] == []
