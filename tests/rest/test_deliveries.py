"""REST deliveries and what operators do with them: list (by subscription, event, state), get with every attempt,
resend, recover a subscription's dead deliveries since T, replay older events, "why (not) delivered", and the
test-send of a sample event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from eventbus.bus.deliveries import EventRef
from eventbus.bus.subscriptions import SubscriptionInfo
from eventbus.clock import ManualClock
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from eventbus.store.records import Attempt, DeliveryRecord
from tests.delivery.helpers import (
    MakeReceiver,
    Receiver,
    Reply,
    advance_to,
    create_endpoint,
    delivery_of,
    order,
    publish,
    settle,
    wait_attempts,
    wait_state,
)
from tests.rest.helpers import ONE_RETRY, Rest, conforms, ok, problem, walk

DELIVERY = "/v1/deliveries/{delivery_id}"
NO_SUCH_SUBSCRIPTION = "sub_0000000000000000000000000"
NO_SUCH_DELIVERY = "dlv_0000000000000000000000000"


def assert_shows(shown: dict[str, Any], record: DeliveryRecord) -> None:
    assert shown["id"] == record.delivery_id
    assert shown["subscription_id"] == record.subscription_id
    assert (shown["event_id"], shown["event_seq"]) == (record.event_id, record.event_seq)
    assert (shown["state"], shown["attempts"]) == (record.state, record.attempts)
    assert shown["created_at"] == format_rfc3339(record.created_at)
    assert shown["dead_reason"] == record.dead_reason
    assert shown["last_error"] == record.last_error
    assert shown["manual"] == record.manual


def assert_shows_attempt(shown: dict[str, Any], attempt: Attempt) -> None:
    assert shown["attempt_id"] == attempt.attempt_id
    assert (shown["number"], shown["status_code"], shown["outcome"]) == (
        attempt.number,
        attempt.status_code,
        attempt.outcome,
    )
    assert shown["started_at"] == format_rfc3339(attempt.started_at)
    assert shown["response_body"] == attempt.response_body.decode()
    assert (shown["manual"], shown["probe"]) == (attempt.manual, attempt.probe)


async def failing_endpoint(
    server: EventBusServer, hook: Receiver, patterns: tuple[str, ...] | list[str] = ("order.*",)
) -> SubscriptionInfo:
    hook.default = Reply(500, body=b"down for maintenance")
    return await create_endpoint(
        server, hook, patterns=patterns, retry_schedule=[timedelta(seconds=s) for s in ONE_RETRY]
    )


async def kill(server: EventBusServer, clock: ManualClock, delivery_id: str) -> DeliveryRecord:
    """Let a ONE_RETRY delivery whose receiver fails use up its two attempts."""
    _, attempts = await wait_attempts(server, delivery_id, 1)
    assert attempts[-1].next_attempt_at is not None
    advance_to(clock, attempts[-1].next_attempt_at)
    return await wait_state(server, delivery_id, "dead")


async def test_list_deliveries_by_subscription_event_and_state(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    good, bad = await receiver(), await receiver()
    ok_endpoint = await create_endpoint(server, good, patterns=["**"])
    failing = await failing_endpoint(server, bad, patterns=["invoice.*"])
    published = await publish(server, order(0), order(1), order(2, type="invoice.paid"))
    doomed = await delivery_of(server, failing.subscription.id, published[2].event_id)
    await kill(server, clock, doomed.delivery_id)
    for result in published:
        done = await delivery_of(server, ok_endpoint.subscription.id, result.event_id)
        await wait_state(server, done.delivery_id, "succeeded")

    everything = await walk(rest, "/v1/deliveries", page_size=2)
    assert len(everything) == 4 == len({d["id"] for d in everything})
    mine = await walk(rest, "/v1/deliveries", page_size=2, params={"subscription_id": ok_endpoint.subscription.id})
    assert {d["subscription_id"] for d in mine} == {ok_endpoint.subscription.id}
    assert [d["event_id"] for d in mine] == [r.event_id for r in published]  # oldest first
    for shown in everything:
        record, _ = await server.services.deliveries.get(shown["id"])
        assert_shows(shown, record)

    of_event = await walk(rest, "/v1/deliveries", page_size=10, params={"event_id": published[2].event_id})
    assert sorted(d["subscription_id"] for d in of_event) == sorted(
        [ok_endpoint.subscription.id, failing.subscription.id]
    )
    by_source_id = await walk(rest, "/v1/deliveries", page_size=10, params={"source": "/shop", "id": published[2].id})
    assert by_source_id == of_event
    dead = await walk(rest, "/v1/deliveries", page_size=10, params={"state": "dead"})
    assert [d["id"] for d in dead] == [doomed.delivery_id]
    assert dead[0]["dead_reason"] == "exhausted" and dead[0]["attempts"] == 2
    succeeded = await walk(rest, "/v1/deliveries", page_size=1, params={"state": "succeeded"})
    assert {d["subscription_id"] for d in succeeded} == {ok_endpoint.subscription.id} and len(succeeded) == 3
    both = await walk(
        rest, "/v1/deliveries", page_size=10, params={"state": "succeeded", "subscription_id": failing.subscription.id}
    )
    assert both == []

    problem(await rest.get("/v1/deliveries", params={"state": "lost"}), 400, "state")
    problem(await rest.get("/v1/deliveries", params={"source": "/shop"}), 400, "id")  # the REST names, not gRPC's
    problem(await rest.get("/v1/deliveries", params={"id": published[0].id}), 400, "source")
    problem(await rest.get("/v1/deliveries", params={"event_id": "evt_0000000000000000000000000"}), 404)
    problem(await rest.get("/v1/deliveries", params={"page_token": "sub_x"}), 400, "page_token")


async def test_get_a_delivery_with_every_attempt(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await failing_endpoint(server, hook)
    [published] = await publish(server, order(1))
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    await kill(server, clock, delivery.delivery_id)

    shown = conforms(await rest.get(f"/v1/deliveries/{delivery.delivery_id}"), "GET", DELIVERY)
    record, attempts = await server.services.deliveries.get(delivery.delivery_id)
    assert_shows(shown, record)
    assert len(shown["attempt_log"]) == 2
    for shown_attempt, attempt in zip(shown["attempt_log"], attempts, strict=True):
        assert_shows_attempt(shown_attempt, attempt)
    first, last = shown["attempt_log"]
    assert (first["status_code"], first["outcome"], first["response_body"]) == (500, "retry", "down for maintenance")
    assert first["next_attempt_at"] is not None and last["outcome"] == "dead" and last["next_attempt_at"] is None
    assert first["duration_ms"] >= 0

    problem(await rest.get(f"/v1/deliveries/{NO_SUCH_DELIVERY}"), 404)
    problem(await rest.get("/v1/deliveries/whatever"), 404)


async def test_resend_a_dead_delivery(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await failing_endpoint(server, hook)
    [published] = await publish(server, order(1))
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    await kill(server, clock, delivery.delivery_id)
    hook.default = Reply(200)

    reply = await rest.post(f"/v1/deliveries/{delivery.delivery_id}/resend")
    queued = conforms(reply, "POST", DELIVERY + "/resend")
    assert reply.status == 202 and queued["id"] == delivery.delivery_id
    assert queued["state"] in ("pending", "leased", "succeeded")
    record = await wait_state(server, delivery.delivery_id, "succeeded")
    shown = ok(await rest.get(f"/v1/deliveries/{delivery.delivery_id}"))
    assert_shows(shown, record)
    assert shown["attempt_log"][-1]["manual"] and shown["attempt_log"][-1]["status_code"] == 200
    requests = await hook.wait_for(3)
    assert {r.webhook_id for r in requests} == {published.event_id}

    problem(await rest.post(f"/v1/deliveries/{NO_SUCH_DELIVERY}/resend"), 404)
    problem(await rest.post(f"/v1/deliveries/{delivery.delivery_id}/resend", {"now": True}), 400, "now")


async def test_recover_requeues_the_dead_deliveries_since_t(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await failing_endpoint(server, hook)
    sub_id = endpoint.subscription.id
    [early] = await publish(server, order(1))
    early_delivery = await delivery_of(server, sub_id, early.event_id)
    await kill(server, clock, early_delivery.delivery_id)
    clock.advance(timedelta(minutes=10))
    since = clock.now()
    [late] = await publish(server, order(2))
    late_delivery = await delivery_of(server, sub_id, late.event_id)
    await kill(server, clock, late_delivery.delivery_id)
    hook.default = Reply(200)

    reply = await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": format_rfc3339(since)})
    assert conforms(reply, "POST", "/v1/subscriptions/{subscription_id}/recover") == {"recovered": 1}
    await wait_state(server, late_delivery.delivery_id, "succeeded")
    assert (await server.services.deliveries.get(early_delivery.delivery_id))[0].state == "dead"  # before T

    again = ok(await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": format_rfc3339(since)}))
    assert again == {"recovered": 0}
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/recover", {}), 400, "since")
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": "yesterday"}), 400, "since")
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": "2026-13-01T00:00:00Z"}), 400, "since")
    future = format_rfc3339(clock.now() + timedelta(days=1))
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": future}), 400, "since")
    problem(
        await rest.post(f"/v1/subscriptions/{sub_id}/recover", {"since": format_rfc3339(since), "include_pending": 1}),
        400,
        "include_pending",
    )
    problem(await rest.post(f"/v1/subscriptions/{NO_SUCH_SUBSCRIPTION}/recover", {"since": format_rfc3339(since)}), 404)


async def test_replay_delivers_older_events_to_a_new_endpoint(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver, clock: ManualClock
) -> None:
    since = clock.now()
    published = await publish(server, order(1), order(2), order(3, type="invoice.paid"))
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, patterns=["order.*", "invoice.*"])
    sub_id = endpoint.subscription.id

    reply = await rest.post(
        f"/v1/subscriptions/{sub_id}/replay", {"since": format_rfc3339(since), "patterns": ["order.*"]}
    )
    answer = conforms(reply, "POST", "/v1/subscriptions/{subscription_id}/replay")
    assert answer == {"upto_seq": max(r.seq for r in published)}
    requests = await hook.wait_for(2)
    assert sorted(r.webhook_id for r in requests) == sorted(r.event_id for r in published[:2])
    deliveries = await walk(rest, "/v1/deliveries", page_size=10, params={"subscription_id": sub_id})
    assert sorted(d["event_id"] for d in deliveries) == sorted(r.event_id for r in published[:2])

    later = format_rfc3339(clock.now() + timedelta(seconds=1))
    assert ok(await rest.post(f"/v1/subscriptions/{sub_id}/replay", {"since": later})) == {"upto_seq": 0}
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/replay", {"patterns": ["a.*"]}), 400, "since")
    problem(
        await rest.post(f"/v1/subscriptions/{sub_id}/replay", {"since": later, "patterns": ["bad pattern!"]}),
        400,
        "patterns[0]",
    )
    problem(await rest.post(f"/v1/subscriptions/{NO_SUCH_SUBSCRIPTION}/replay", {"since": later}), 404)


async def test_why_explains_by_event_id_and_by_source_and_id(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, patterns=["order.*"])
    sub_id = endpoint.subscription.id
    delivered, unmatched = await publish(server, order(1), order(2, type="invoice.paid"))
    await wait_state(server, (await delivery_of(server, sub_id, delivered.event_id)).delivery_id, "succeeded")
    why = f"/v1/subscriptions/{sub_id}/why"

    by_id = conforms(
        await rest.get(why, params={"event_id": delivered.event_id}), "GET", "/v1/subscriptions/{subscription_id}/why"
    )
    expected = await server.services.deliveries.why(sub_id, EventRef(event_id=delivered.event_id))
    assert (by_id["verdict"], by_id["reasons"]) == ("succeeded", expected.reasons)
    assert (by_id["subscription_id"], by_id["event_id"]) == (sub_id, delivered.event_id)
    assert expected.delivery is not None and by_id["delivery"]["id"] == expected.delivery.delivery_id
    assert [a["attempt_id"] for a in by_id["attempt_log"]] == [a.attempt_id for a in expected.attempts]
    by_source = ok(await rest.get(why, params={"source": "/shop", "id": delivered.id}))
    assert by_source == by_id

    not_matched = ok(await rest.get(why, params={"source": "/shop", "id": unmatched.id}))
    assert (not_matched["verdict"], not_matched["delivery"], not_matched["attempt_log"]) == ("not_matched", None, [])
    assert "invoice.paid" in not_matched["reasons"][0]

    problem(await rest.get(why), 400, "event_id")
    problem(await rest.get(why, params={"source": "/shop"}), 400, "id")
    problem(await rest.get(why, params={"id": delivered.id}), 400, "source")
    problem(await rest.get(why, params={"event_id": "evt_0000000000000000000000000"}), 404)
    problem(
        await rest.get(f"/v1/subscriptions/{NO_SUCH_SUBSCRIPTION}/why", params={"event_id": delivered.event_id}), 404
    )


async def test_send_a_test_event_to_one_subscription(
    server: EventBusServer, rest: Rest, receiver: MakeReceiver
) -> None:
    hook, bystander = await receiver(), await receiver()
    endpoint = await create_endpoint(server, hook, patterns=["order.*"])
    await create_endpoint(server, bystander, patterns=["**"])
    sub_id = endpoint.subscription.id

    reply = await rest.post(f"/v1/subscriptions/{sub_id}/test")
    queued = conforms(reply, "POST", "/v1/subscriptions/{subscription_id}/test")
    assert reply.status == 202 and queued["subscription_id"] == sub_id
    await wait_state(server, queued["id"], "succeeded")
    [request] = await hook.wait_for(1)
    assert request.webhook_id == queued["event_id"]
    assert request.json()["type"] == "eventbus.test"  # sent although the patterns are order.*

    custom = ok(
        await rest.post(f"/v1/subscriptions/{sub_id}/test", {"type": "eventbus.test.order", "data": {"n": 7}}), 202
    )
    await wait_state(server, custom["id"], "succeeded")
    [_, second] = await hook.wait_for(2)
    assert second.json()["type"] == "eventbus.test.order" and second.json()["data"] == {"n": 7}
    await settle(server)
    assert bystander.requests == []  # to this subscription only

    await server.services.subscriptions.pause(sub_id)
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/test"), 409)
    problem(await rest.post(f"/v1/subscriptions/{sub_id}/test", {"kind": "x"}), 400, "kind")
    problem(await rest.post(f"/v1/subscriptions/{NO_SUCH_SUBSCRIPTION}/test"), 404)
