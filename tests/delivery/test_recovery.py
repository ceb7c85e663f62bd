"""Recovery (DESIGN.md §3): resend one delivery, recover a subscription's dead (and pending) deliveries since T,
replay older events into a new endpoint. The `webhook-id` stays the event's id throughout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventbus.bus.deliveries import EventRef
from eventbus.bus.dispatch import DispatchSettings
from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from eventbus.store.records import HealthPolicy
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    advance_to,
    create_endpoint,
    deliveries_of,
    delivery_of,
    order,
    publish,
    settle,
    system_events,
    wait_attempts,
    wait_state,
)

ONE_RETRY = [timedelta(seconds=1)]  # two attempts in all: dead within a second of the clock


@pytest.fixture
def dispatch_settings() -> DispatchSettings:
    """The circuit stays closed however many failures these tests cause (test_health.py covers it)."""
    return DispatchSettings(stop_grace=0.2, health=HealthPolicy(failure_threshold=1000))


async def kill(server: EventBusServer, clock: ManualClock, delivery_id: str) -> None:
    """Let a delivery of a ONE_RETRY endpoint whose receiver fails use up its two attempts."""
    _, attempts = await wait_attempts(server, delivery_id, 1)
    assert attempts[-1].next_attempt_at is not None
    advance_to(clock, attempts[-1].next_attempt_at)
    await wait_state(server, delivery_id, "dead")


async def test_resend_is_one_manual_attempt_with_the_same_webhook_id(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, retry_schedule=ONE_RETRY)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    await kill(server, clock, delivery.delivery_id)

    await server.services.deliveries.resend(delivery.delivery_id)

    record, attempts = await wait_attempts(server, delivery.delivery_id, 3)
    assert (record.state, record.dead_reason) == ("dead", "exhausted")
    assert attempts[-1].manual
    assert (attempts[-1].outcome, attempts[-1].next_attempt_at) == ("dead", None)  # no schedule after a resend
    clock.advance(timedelta(hours=1))
    await settle(server)
    assert len(hook.requests) == 3

    hook.default = Reply(200)
    await server.services.deliveries.resend(delivery.delivery_id)
    record = await wait_state(server, delivery.delivery_id, "succeeded")
    assert record.attempts == 4
    requests = await hook.wait_for(4)
    assert [r.webhook_id for r in requests] == [published.event_id] * 4


async def test_recover_requeues_dead_deliveries_since_t_with_fresh_attempts(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, retry_schedule=ONE_RETRY)
    sub_id = endpoint.subscription.id
    [old] = await publish(server, order("old"))
    old_delivery = await delivery_of(server, sub_id, old.event_id)
    await kill(server, clock, old_delivery.delivery_id)
    clock.advance(timedelta(minutes=1))
    since = clock.now()
    recent = await publish(server, order("a"), order("b"))
    recent_deliveries = [await delivery_of(server, sub_id, p.event_id) for p in recent]
    retries = [(await wait_attempts(server, d.delivery_id, 1))[1][0].next_attempt_at for d in recent_deliveries]
    advance_to(clock, max(r for r in retries if r is not None))
    for delivery in recent_deliveries:
        await wait_state(server, delivery.delivery_id, "dead")
    assert len(hook.requests) == 6

    hook.default = Reply(200)
    clock.advance(timedelta(minutes=1))
    recovered = await server.services.subscriptions.recover(sub_id, since=since)

    assert recovered == 2
    requests = await hook.wait_for(8)
    assert {r.webhook_id for r in requests[6:]} == {p.event_id for p in recent}
    for delivery in recent_deliveries:
        record, attempts = await wait_attempts(server, delivery.delivery_id, 3)
        assert (record.state, record.attempts) == ("succeeded", 1)  # a fresh schedule: attempt 1 again
        assert [a.number for a in sorted(attempts, key=lambda a: a.started_at)] == [1, 2, 1]
    assert (await delivery_of(server, sub_id, old.event_id)).state == "dead"  # before T: left alone
    [(_, data)] = [(t, d) for t, d in await system_events(server, sub_id) if t == "eventbus.delivery.recovered"]
    assert data["count"] == 2


async def test_recover_with_pending_sends_waiting_deliveries_now(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.replies.append(Reply(500))
    endpoint = await create_endpoint(server, hook)
    sub_id = endpoint.subscription.id
    since = clock.now()
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub_id, published.event_id)
    record, _ = await wait_attempts(server, delivery.delivery_id, 1)
    assert record.state == "pending"  # its retry is 5 s away on a clock that does not move

    assert await server.services.subscriptions.recover(sub_id, since=since) == 0  # dead ones only
    assert await server.services.subscriptions.recover(sub_id, since=since, include_pending=True) == 1

    record = await wait_state(server, delivery.delivery_id, "succeeded")
    assert record.attempts == 1
    assert [r.webhook_id for r in await hook.wait_for(2)] == [published.event_id] * 2


async def test_replay_delivers_older_matching_events_to_a_new_endpoint(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    [before_t] = await publish(server, order("too old"))
    clock.advance(timedelta(minutes=5))
    since = clock.now()
    wanted = await publish(server, order("a"), order("b", type="order.refunded"))
    [other] = await publish(server, order("c", type="user.created"))
    clock.advance(timedelta(minutes=5))
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, patterns=["order.*", "user.*"])
    sub_id = endpoint.subscription.id
    await settle(server)
    assert hook.requests == []  # created after the events: nothing of them by itself
    why = await server.services.deliveries.why(sub_id, EventRef(event_id=wanted[0].event_id))
    assert why.verdict == "not_created"

    await server.services.subscriptions.replay(sub_id, since=since, patterns=["order.*"])

    requests = await hook.wait_for(2)
    assert {r.webhook_id for r in requests} == {p.event_id for p in wanted}
    await settle(server)
    assert len(hook.requests) == 2  # neither the event before T nor the one the replay's patterns exclude
    delivered = {d.event_id for d in await deliveries_of(server, sub_id)}
    assert delivered == {p.event_id for p in wanted}
    assert not {before_t.event_id, other.event_id} & delivered
