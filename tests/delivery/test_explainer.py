"""`Deliveries.why`: one reason per way an event can fail to reach, or wait for, an endpoint."""

from __future__ import annotations

from datetime import timedelta

from eventbus.bus.deliveries import EventRef, Explanation
from eventbus.clock import ManualClock
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from eventbus.store.base import SubscriptionState
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    create_endpoint,
    delivery_of,
    open_circuit,
    order,
    publish,
    subscription,
    wait_attempts,
    wait_state,
)


async def why(server: EventBusServer, subscription_id: str, event_id: str) -> Explanation:
    return await server.services.deliveries.why(subscription_id, EventRef(event_id=event_id))


async def test_pattern_mismatch(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver(), patterns=["order.*"])
    [published] = await publish(server, order(type="user.created"))

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert explained.verdict == "not_matched"
    assert explained.reasons == ["type 'user.created' matches none of the patterns ['order.*']"]
    assert explained.delivery is None


async def test_filter_false_names_the_failing_clause(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(
        server, await receiver(), filter='{"data.amount": {"$gte": 100}, "data.currency": "BRL"}'
    )
    [published] = await publish(server, order(data={"amount": 500, "currency": "USD"}))

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert explained.verdict == "filtered"
    [reason] = explained.reasons
    assert '{"data.currency":"BRL"}' in reason
    assert "amount" not in reason  # the clause that holds is not blamed


async def test_paused(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver(), paused=True)
    [published] = await publish(server, order())

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert explained.verdict == "held"
    assert explained.reasons == ["held: the subscription is paused; resume it to release its deliveries"]
    assert explained.delivery is not None and explained.delivery.state == "pending"


async def test_disabled_when_the_event_arrived(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver())
    sub_id = endpoint.subscription.id
    await server.services.subscriptions.set_state(sub_id, SubscriptionState.DISABLED, "maintenance")
    [published] = await publish(server, order())

    explained = await why(server, sub_id, published.event_id)

    assert explained.verdict == "not_created"
    [reason] = explained.reasons
    assert reason.startswith("the subscription is disabled (maintenance): no deliveries are created")


async def test_circuit_open(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    await open_circuit(server, hook, endpoint)
    [published] = await publish(server, order("held"))

    explained = await why(server, endpoint.subscription.id, published.event_id)

    health = (await subscription(server, endpoint.subscription.id)).health
    assert health.circuit_opened_at is not None and health.next_probe_at is not None
    assert explained.verdict == "held"
    assert explained.reasons == [
        f"held: the circuit is open since {format_rfc3339(health.circuit_opened_at)} after 5 failures in a row; "
        f"next probe at {format_rfc3339(health.next_probe_at)}"
    ]


async def test_subscription_created_after_the_event(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    [published] = await publish(server, order())
    clock.advance(timedelta(minutes=1))
    endpoint = await create_endpoint(server, await receiver())

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert explained.verdict == "not_created"
    [reason] = explained.reasons
    assert reason.startswith(f"the subscription was created at {format_rfc3339(endpoint.subscription.created_at)}")
    assert "after the event was received" in reason
    assert "replay" in reason


async def test_ordering_blocker(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, ordering="subject")
    sub_id = endpoint.subscription.id
    first, second = await publish(server, order(1, subject="cart-9"), order(2, subject="cart-9"))
    head = await delivery_of(server, sub_id, first.event_id)
    await wait_attempts(server, head.delivery_id, 1)

    explained = await why(server, sub_id, second.event_id)

    assert explained.verdict == "held"
    assert explained.reasons == [
        f"held: delivery {head.delivery_id} of the same subject (seq {first.seq}) goes first (ordering by subject); "
        "it is pending"
    ]


async def test_attempts_so_far_and_the_next_attempt_time(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(503)
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    record, _ = await wait_attempts(server, delivery.delivery_id, 1)

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert record.next_attempt_at is not None
    assert explained.verdict == "pending"
    assert explained.reasons == [
        f"pending: attempt 2 of 8 is due at {format_rfc3339(record.next_attempt_at)} "
        "(after 1 attempt; last error: HTTP 503)"
    ]
    assert [a.status_code for a in explained.attempts] == [503]


async def test_dead_with_its_reason(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(410)
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    await wait_state(server, delivery.delivery_id, "dead")

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert explained.verdict == "dead"
    assert explained.reasons == ["dead (gone) after 1 attempt; last error: HTTP 410; resend or recover it"]


async def test_succeeded(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver())
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    record = await wait_state(server, delivery.delivery_id, "succeeded")

    explained = await why(server, endpoint.subscription.id, published.event_id)

    assert record.finished_at is not None
    assert explained.verdict == "succeeded"
    assert explained.reasons == [f"delivered at {format_rfc3339(record.finished_at)} after 1 attempt"]
