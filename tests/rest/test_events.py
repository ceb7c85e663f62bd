"""REST events: list with filters (pattern, source, subject, time range) page by page, get one with the raw inbound
request it came from (a `/hooks/{source}` delivery verified by the bundled `standardwebhooks` connector), and
publish CloudEvents JSON with a key that holds the `publish` scope only."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import standardwebhooks

from eventbus.auth import Scope
from eventbus.bus.sources import SourceInput
from eventbus.cejson import stored_event_to_json
from eventbus.clock import ManualClock
from eventbus.http.rest.params import MAX_UNKNOWN_NAMED
from eventbus.model import Event, format_rfc3339
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import publish
from tests.rest.helpers import Rest, conforms, fields, ok, problem, walk

GIVEN = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def ce(n: int, type: str = "order.paid", **attributes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e-{n}", "source": "/shop", "type": type, "data": {"n": n}, **attributes}


async def stored_json(server: EventBusServer, event_id: str) -> dict[str, Any]:
    return stored_event_to_json(await server.bus.get_event(event_id=event_id))


async def test_list_filters_by_pattern_source_subject_and_time_and_pages(
    server: EventBusServer, rest: Rest, clock: ManualClock
) -> None:
    start = clock.now()
    early = await publish(
        server,
        *(Event.create(type="order.paid", source="/shop", subject=f"o-{n % 2}", data={"n": n}) for n in range(6)),
        Event.create(type="invoice.sent", source="/billing", subject="o-0", data={}),
    )
    clock.advance(timedelta(minutes=10))
    middle = clock.now()
    late = await publish(server, Event.create(type="order.refunded", source="/shop", subject="o-1", data={}))

    everything = await walk(rest, "/v1/events", page_size=3)
    assert [e["event_id"] for e in everything] == [r.event_id for r in (*early, *late)]
    for shown in everything:
        assert shown == await stored_json(server, shown["event_id"])

    async def ids(**params: str) -> list[str]:
        return [e["event_id"] for e in await walk(rest, "/v1/events", page_size=2, params=params)]

    orders = [r.event_id for r in early[:6]]
    assert await ids(pattern="order.paid") == orders
    assert await ids(pattern="order.*") == [*orders, late[0].event_id]
    both = await walk(rest, "/v1/events", page_size=2, params=[("pattern", "invoice.*"), ("pattern", "order.refunded")])
    assert [e["event_id"] for e in both] == [early[6].event_id, late[0].event_id]
    assert await ids(source="/billing") == [early[6].event_id]
    assert await ids(subject="o-1") == [r.event_id for r in early[1:6:2]] + [late[0].event_id]
    assert await ids(received_after=format_rfc3339(middle)) == [late[0].event_id]
    assert await ids(received_before=format_rfc3339(middle)) == [r.event_id for r in early]
    assert await ids(
        received_after=format_rfc3339(start), received_before=format_rfc3339(middle), source="/billing"
    ) == [early[6].event_id]
    assert await ids(pattern="nothing.here") == []

    problem(await rest.get("/v1/events", params={"received_after": "noon"}), 400, "received_after")
    problem(await rest.get("/v1/events", params={"received_before": "2026-02-30T00:00:00Z"}), 400, "received_before")
    problem(
        await rest.get(
            "/v1/events", params={"received_after": format_rfc3339(middle), "received_before": format_rfc3339(start)}
        ),
        400,
        "received_before",
    )
    problem(await rest.get("/v1/events", params={"pattern": "bad pattern!"}), 400)
    problem(await rest.get("/v1/events", params={"page_token": "not-a-token"}), 400, "page_token")
    problem(await rest.get("/v1/events", params=[("source", "/a"), ("source", "/b")]), 400, "source")


async def test_a_sparse_pattern_is_walked_through_short_and_empty_pages(server: EventBusServer, rest: Rest) -> None:
    """A page scans a bounded stretch of the log: few matches make short or empty pages that still carry a token."""
    wanted = []
    for n in range(3):
        await publish(server, *(Event.create(type="noise.tick", source="/clock", data={}) for _ in range(25)))
        wanted += await publish(server, Event.create(type="order.paid", source="/shop", data={"n": n}))
    first = ok(await rest.get("/v1/events", params={"pattern": "order.paid", "page_size": "1"}))
    assert first["items"] == [] and first["next_page_token"]  # 10 rows scanned, none matched
    found = await walk(rest, "/v1/events", page_size=1, params={"pattern": "order.paid"})
    assert [e["event_id"] for e in found] == [r.event_id for r in wanted]
    everything = await walk(rest, "/v1/events", page_size=7)
    assert len(everything) == 78 == len({e["event_id"] for e in everything})


async def test_get_an_event_with_the_raw_request_it_came_from(
    server: EventBusServer, rest: Rest, clock: ManualClock
) -> None:
    await server.services.sources.create(SourceInput(name="billing", connector="standardwebhooks", secrets=[GIVEN]))
    payload = json.dumps({"type": "invoice.paid", "data": {"invoice": "in_1", "total": 42}})
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(clock.now().timestamp())),
        "webhook-signature": standardwebhooks.Webhook(GIVEN).sign("msg_1", clock.now(), payload),
        "Content-Type": "application/json",
    }
    hook = await rest.with_key(None).request("POST", "/hooks/billing?via=test", body=payload.encode(), headers=headers)
    assert hook.status == 202, hook.text
    [accepted] = hook.json["events"]

    shown = conforms(await rest.get(f"/v1/events/{accepted['event_id']}"), "GET", "/v1/events/{event_id}")
    assert shown["event"] == await stored_json(server, accepted["event_id"])
    assert shown["event"]["type"] == "standardwebhooks.invoice.paid"  # the connector prefixes its types
    assert shown["event"]["data"] == {"invoice": "in_1", "total": 42}
    raw = shown["raw_request"]
    assert (raw["method"], raw["path"]) == ("POST", "/hooks/billing")
    assert raw["query"] == [["via", "[redacted]"]]  # URL tokens live in queries: no value is kept
    assert (raw["body"], raw["body_base64"]) == (payload, None)
    sent = {name.lower(): value for name, value in raw["headers"]}
    assert sent["webhook-id"] == "msg_1" and sent["content-type"] == "application/json"
    assert raw["received_at"] == format_rfc3339(clock.now())
    assert GIVEN not in json.dumps(shown)

    [published] = await publish(server)
    plain = conforms(await rest.get(f"/v1/events/{published.event_id}"), "GET", "/v1/events/{event_id}")
    assert plain == {"event": await stored_json(server, published.event_id), "raw_request": None}
    problem(await rest.get("/v1/events/evt_0000000000000000000000000"), 404)
    problem(await rest.get("/v1/events/whatever"), 404)


async def test_publish_needs_the_publish_scope_only(server: EventBusServer, rest: Rest) -> None:
    publisher = rest.with_key((await server.services.api_keys.create([Scope.PUBLISH], name="shop")).key)
    subscriber = rest.with_key((await server.services.api_keys.create([Scope.SUBSCRIBE], name="reader")).key)

    reply = await publisher.post("/v1/events", {"events": [ce(1), ce(2, subject="o-2")]})
    answer = conforms(reply, "POST", "/v1/events")
    assert reply.status == 201
    stored, _ = await server.bus.list_events()
    assert answer["events"] == [
        {"event_id": s.event_id, "id": s.event.id, "source": "/shop", "seq": s.seq, "duplicate": False} for s in stored
    ]
    assert [s.event.json_data() for s in stored] == [{"n": 1}, {"n": 2}]
    assert stored[1].event.subject == "o-2"

    again = await publisher.post("/v1/events", {"events": [ce(1)]})
    assert conforms(again, "POST", "/v1/events")["events"][0]["duplicate"] is True and again.status == 200
    assert len((await server.bus.list_events())[0]) == 2

    problem(await subscriber.post("/v1/events", {"events": [ce(3)]}), 403)
    problem(await rest.with_key(None).post("/v1/events", {"events": [ce(3)]}), 401)
    problem(await publisher.get("/v1/events"), 403)  # reading the log is an admin's
    problem(await publisher.post("/v1/events", {"events": [{**ce(3), "source": "/hooks/stripe"}]}), 403)
    invalid = problem(await publisher.post("/v1/events", {"events": [ce(3), {**ce(4), "type": ""}]}), 400)
    assert any(f.startswith("events[1]") for f in (e["field"] for e in invalid["errors"]))
    problem(await publisher.post("/v1/events", {"events": []}), 400, "events")
    problem(await publisher.post("/v1/events", {"events": {}}), 400, "events")
    problem(await publisher.post("/v1/events", {"events": [ce(n) for n in range(1001)]}), 400, "events")
    problem(await publisher.post("/v1/events", {"event": [ce(3)]}), 400, "event")
    assert len((await server.bus.list_events())[0]) == 2  # nothing of a refused batch is stored


async def test_every_unknown_field_is_named_at_once(server: EventBusServer, rest: Rest) -> None:
    refused = problem(await rest.post("/v1/events", {"events": [ce(1)], "zeta": 1, "alpha": 2, "evnts": []}), 400)
    assert fields(refused) == ["alpha", "evnts", "zeta"]
    assert all("unknown field" in e["detail"] and "events" in e["detail"] for e in refused["errors"])
    assert refused["detail"].startswith("alpha: unknown field") and "(and 2 more)" in refused["detail"]
    # A body of many unknown keys is answered with a bounded list, not one entry per key.
    many = problem(await rest.post("/v1/events", {"events": [ce(1)], **{f"k{n:04}": 0 for n in range(5000)}}), 400)
    assert fields(many) == [f"k{n:04}" for n in range(MAX_UNKNOWN_NAMED)]
    assert many["detail"].startswith("5000 unknown fields")
    assert (await server.bus.list_events())[0] == []


async def test_a_forged_page_token_beyond_64_bits_is_refused(rest: Rest) -> None:
    forged = base64.urlsafe_b64encode(b"seq:99999999999999999999").decode().rstrip("=")
    problem(await rest.get("/v1/events", params={"page_token": forged}), 400, "page_token")
