"""Delivery metrics moving as a real receiver answers: attempts by outcome, attempt latency, the backlog gauges
(pending, scheduled, held), the oldest pending age, dead letters by reason and circuit states."""

from __future__ import annotations

from datetime import timedelta

from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    create_endpoint,
    deliveries_of,
    open_circuit,
    order,
    publish,
    settle,
    wait_state,
)
from tests.metrics.helpers import scrape


async def test_success_retry_and_dead_move_the_numbers(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, retry_schedule=[timedelta(seconds=10)])
    sid = endpoint.subscription.id
    before = await scrape(server)
    assert before.value("eventbus_delivery_attempts_total", subscription=sid) == 0
    assert before.value("eventbus_deliveries", state="pending") == 0

    [ok] = await publish(server, order(1))
    delivered = await wait_state(server, (await deliveries_of(server, sid))[0].delivery_id, "succeeded")
    assert delivered.event_id == ok.event_id
    after_success = await scrape(server)
    assert after_success.value("eventbus_delivery_attempts_total", subscription=sid, outcome="succeeded") == 1
    assert after_success.value("eventbus_attempt_duration_seconds_count", kind="webhook") == 1
    assert after_success.value("eventbus_events_published_total", source="/shop", type="order.paid") == 1

    hook.default = Reply(500)
    [failing] = await publish(server, order(2))
    [record] = [d for d in await deliveries_of(server, sid) if d.event_id == failing.event_id]
    await hook.wait_for(2)
    await settle(server)
    retrying = await scrape(server)
    assert retrying.value("eventbus_delivery_attempts_total", subscription=sid, outcome="retry") == 1
    assert retrying.value("eventbus_deliveries", state="scheduled") == 1
    assert retrying.value("eventbus_subscription_deliveries", subscription=sid, state="scheduled") == 1
    assert retrying.value("eventbus_deliveries", state="pending") == 0
    clock.advance(timedelta(seconds=5))  # the retry is 10 s (±20 %) away: not due yet, but five seconds older
    aged = await scrape(server)
    assert aged.value("eventbus_oldest_pending_age_seconds") >= 5

    clock.advance(timedelta(seconds=10))  # the retry is due: it fails again, the last attempt: dead (exhausted)
    server.dispatcher.wake()
    await wait_state(server, record.delivery_id, "dead")
    dead = await scrape(server)
    assert dead.value("eventbus_delivery_attempts_total", subscription=sid, outcome="dead") == 1
    assert dead.value("eventbus_dead_letters", reason="exhausted") == 1
    assert dead.value("eventbus_deliveries", state="scheduled") == 0
    assert dead.value("eventbus_oldest_pending_age_seconds") == 0
    assert dead.value("eventbus_attempt_duration_seconds_count", kind="webhook") == 3


async def test_gone_is_a_dead_letter_and_paused_deliveries_are_held(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    gone_hook, paused_hook = await receiver(), await receiver()
    gone_hook.default = Reply(410)
    gone = await create_endpoint(server, gone_hook, patterns=["order.gone"])
    paused = await create_endpoint(server, paused_hook, patterns=["order.paid"])
    await server.services.subscriptions.pause(paused.subscription.id)

    await publish(server, order(1, type="order.gone"), order(2), order(3))
    [record] = await deliveries_of(server, gone.subscription.id)
    await wait_state(server, record.delivery_id, "dead")
    await settle(server)
    seen = await scrape(server)
    assert seen.value("eventbus_dead_letters", reason="gone") == 1
    assert seen.value("eventbus_deliveries", state="held") == 2
    assert seen.value("eventbus_subscription_deliveries", subscription=paused.subscription.id, state="held") == 2
    assert seen.value("eventbus_subscriptions", kind="webhook", state="paused") == 1
    assert seen.value("eventbus_subscriptions", kind="webhook", state="disabled") == 1  # 410 disables it
    assert paused_hook.requests == []

    await server.services.subscriptions.resume(paused.subscription.id)
    await paused_hook.wait_for(2)
    await settle(server)
    released = await scrape(server)
    assert released.value("eventbus_deliveries", state="held") == 0
    sent = released.value("eventbus_delivery_attempts_total", subscription=paused.subscription.id, outcome="succeeded")
    assert sent == 2


async def test_an_open_circuit_is_counted_and_holds_its_deliveries(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    closed = await scrape(server)
    assert closed.value("eventbus_circuits", state="closed") == 1
    assert closed.value("eventbus_circuits", state="open") == 0
    await open_circuit(server, hook, endpoint)
    await settle(server)
    opened = await scrape(server)
    assert opened.value("eventbus_circuits", state="open") == 1
    assert opened.value("eventbus_circuits", state="closed") == 0
    assert opened.value("eventbus_deliveries", state="held") == 5
    assert opened.value("eventbus_delivery_attempts_total", subscription=endpoint.subscription.id, outcome="retry") == 5
