"""Per-subscription limits and isolation (DESIGN.md §3, §8): the rate limit runs on the injected clock,
max_concurrency bounds requests in flight, and a hanging endpoint never slows another."""

from __future__ import annotations

from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    create_endpoint,
    deliveries_of,
    order,
    publish,
    settle,
    wait_state,
)


async def test_rate_limit_is_measured_on_the_injected_clock(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    await create_endpoint(server, hook, rate_limit=2)
    await publish(server, *(order(n) for n in range(10)))

    counts = []
    for expected in (2, 4, 6, 8, 10):
        await hook.wait_for(expected)
        await settle(server)
        counts.append(len(hook.requests))
        clock.advance(1)

    assert counts == [2, 4, 6, 8, 10]  # a burst of 2, then 2 per second of the clock, however long real time took


async def test_max_concurrency_bounds_requests_in_flight(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(200, hold=True)
    endpoint = await create_endpoint(server, hook, max_concurrency=2)
    await publish(server, *(order(n) for n in range(6)))

    for released in range(5):
        await hook.wait_held(2)
        await settle(server)
        assert hook.in_flight == 2
        assert len(hook.requests) == released + 2
        hook.release(1)
    await hook.wait_for(6)
    hook.release()

    for delivery in await deliveries_of(server, endpoint.subscription.id):
        await wait_state(server, delivery.delivery_id, "succeeded")
    assert hook.max_in_flight == 2


async def test_a_hanging_endpoint_does_not_slow_another(server: EventBusServer, receiver: MakeReceiver) -> None:
    stuck, healthy = await receiver(), await receiver()
    stuck.default = Reply(200, hold=True)
    hanging = await create_endpoint(server, stuck, patterns=["order.*"], options={"timeout": 5})
    fine = await create_endpoint(server, healthy, patterns=["user.*"])

    await publish(server, *(order(n) for n in range(10)))
    await stuck.wait_held(10)
    await publish(server, *(order(n, type="user.created") for n in range(5)))

    await healthy.wait_for(5, within=4.0)  # inside the hanging endpoint's 5 s timeout
    for delivery in await deliveries_of(server, fine.subscription.id):
        await wait_state(server, delivery.delivery_id, "succeeded", within=4.0)
    hung = await deliveries_of(server, hanging.subscription.id)
    assert [(d.state, d.attempts) for d in hung] == [("leased", 1)] * 10  # none of them has even timed out yet
    assert stuck.in_flight == 10
