"""Endpoint health (DESIGN.md §3): the circuit breaker (open, hold without using attempts, one probe at a time,
close and release), its system events, and auto-disable after the disable window with warnings first."""

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
    open_circuit,
    order,
    publish,
    settle,
    subscription,
    system_events,
    wait_attempts,
    wait_state,
)


async def test_circuit_opens_after_five_failures_and_holds_without_using_attempts(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    sub_id = endpoint.subscription.id
    await open_circuit(server, hook, endpoint)
    await publish(server, order(5), order(6))

    clock.advance(timedelta(seconds=10))  # the first retries (5 s ± 20 %) are due, the probe (30 s) is not
    await settle(server)

    assert len(hook.requests) == 5
    attempts = sorted(d.attempts for d in await deliveries_of(server, sub_id))
    assert attempts == [0, 0, 1, 1, 1, 1, 1]
    assert (await subscription(server, sub_id)).health.circuit == "open"


async def test_probe_goes_alone_and_its_success_closes_the_circuit_releasing_everything(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook)
    sub_id = endpoint.subscription.id
    await open_circuit(server, hook, endpoint)
    await publish(server, order(5), order(6))
    health = (await subscription(server, sub_id)).health
    assert health.circuit_opened_at is not None and health.next_probe_at is not None
    assert health.next_probe_at == health.circuit_opened_at + timedelta(seconds=30)

    hook.replies.append(Reply(200, hold=True))  # the probe: answered only when the test says so
    hook.default = Reply(200)
    clock.advance(timedelta(seconds=29))
    await settle(server)
    assert len(hook.requests) == 5  # not yet: probe_after is 30 s
    advance_to(clock, health.next_probe_at)
    await hook.wait_held(1)
    await settle(server)
    assert len(hook.requests) == 6  # exactly one request while the probe is out
    assert hook.in_flight == 1

    hook.release()
    await hook.wait_for(12)  # the other six at once, without moving the clock
    for delivery in await deliveries_of(server, sub_id):
        await wait_state(server, delivery.delivery_id, "succeeded")
    closed = await subscription(server, sub_id)
    assert closed.health.circuit == "closed"
    assert closed.health.consecutive_failures == 0
    assert sorted(d.attempts for d in await deliveries_of(server, sub_id)) == [1, 1, 2, 2, 2, 2, 2]
    types = [t for t, _ in await system_events(server, sub_id)]
    assert types == ["eventbus.endpoint.circuit_opened", "eventbus.endpoint.circuit_closed"]


async def test_circuit_events_reach_watchers_but_never_the_endpoint_itself(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    failing_hook, watcher_hook = await receiver(), await receiver()
    failing = await create_endpoint(server, failing_hook, patterns=["order.*", "eventbus.**"])
    watcher = await create_endpoint(server, watcher_hook, patterns=["eventbus.**"])

    await open_circuit(server, failing_hook, failing)

    [request] = await watcher_hook.wait_for(1)
    body = request.json()
    assert body["type"] == "eventbus.endpoint.circuit_opened"
    assert body["data"]["subscription_id"] == failing.subscription.id
    assert body["data"]["consecutive_failures"] == 5
    [(_, data)] = await system_events(server, failing.subscription.id)
    assert data["subscription_id"] == failing.subscription.id
    own = await deliveries_of(server, failing.subscription.id)
    assert len(own) == 5
    assert request.webhook_id not in {d.event_id for d in own}  # never its own circuit event
    why = await server.services.deliveries.why(failing.subscription.id, EventRef(event_id=request.webhook_id))
    assert why.verdict == "not_matched"
    assert why.reasons == ["a subscription never receives system events about itself"]
    assert len(await deliveries_of(server, watcher.subscription.id)) == 1


@pytest.fixture
def dispatch_settings() -> DispatchSettings:
    return DispatchSettings(stop_grace=0.2, health=HealthPolicy(disable_after=timedelta(hours=1)))


async def test_endpoint_failing_past_the_disable_window_is_disabled_after_warnings(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, retry_schedule=[timedelta(minutes=10)] * 12)
    sub_id = endpoint.subscription.id
    [published] = await publish(server, order())
    [delivery] = await deliveries_of(server, sub_id)
    first_failure = clock.now()

    for number in range(1, 13):
        record, attempts = await wait_attempts(server, delivery.delivery_id, number)
        if (await subscription(server, sub_id)).state == "disabled":
            break
        assert attempts[-1].next_attempt_at is not None
        advance_to(clock, attempts[-1].next_attempt_at)
    disabled = await subscription(server, sub_id)

    assert disabled.state == "disabled"
    assert disabled.state_reason is not None and disabled.state_reason.startswith("failing since")
    assert attempts[-1].started_at - first_failure >= timedelta(hours=1)
    assert attempts[-2].started_at - first_failure < timedelta(hours=1)
    events = [(t, d) for t, d in await system_events(server, sub_id) if ".circuit_" not in t]
    types = [t for t, _ in events]
    assert types[-1] == "eventbus.endpoint.disabled"
    assert set(types[:-1]) == {"eventbus.endpoint.failing"}
    assert 1 <= len(types[:-1]) <= 3  # at 50 %, 70 %, 90 % of the window, as far as attempts landed there
    assert events[0][1]["disable_at"] == (first_failure + timedelta(hours=1)).isoformat()
    assert record.state == "pending"  # held, not dead: enabling the endpoint would release it
    count = len(hook.requests)
    clock.advance(timedelta(hours=2))
    await settle(server)
    assert len(hook.requests) == count
    assert published.event_id == record.event_id
