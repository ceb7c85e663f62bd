"""Subscription states (DESIGN.md §3): paused creates and holds deliveries, disabled creates none and holds the
pending ones; resuming releases what was held."""

from __future__ import annotations

from eventbus.bus.deliveries import EventRef
from eventbus.runtime import EventBusServer
from eventbus.store.base import SubscriptionState
from tests.delivery.helpers import (
    MakeReceiver,
    create_endpoint,
    deliveries_of,
    order,
    publish,
    settle,
    system_events,
    wait_state,
)


async def test_paused_endpoint_gets_deliveries_created_and_held_until_resumed(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, paused=True)
    sub_id = endpoint.subscription.id
    published = await publish(server, order(1), order(2))

    await settle(server)
    held = await deliveries_of(server, sub_id)
    assert [(d.event_id, d.state, d.attempts) for d in held] == [(p.event_id, "pending", 0) for p in published]
    assert hook.requests == []
    why = await server.services.deliveries.why(sub_id, EventRef(event_id=published[0].event_id))
    assert why.verdict == "held"
    assert any("paused" in reason for reason in why.reasons)

    await server.services.subscriptions.resume(sub_id)

    requests = await hook.wait_for(2)
    assert {r.webhook_id for r in requests} == {p.event_id for p in published}
    for delivery in held:
        await wait_state(server, delivery.delivery_id, "succeeded")


async def test_disabled_endpoint_creates_no_deliveries_and_enabling_releases_the_held_ones(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, paused=True)
    sub_id = endpoint.subscription.id
    [before] = await publish(server, order(1))  # created while paused: pending, held
    await server.services.subscriptions.set_state(sub_id, SubscriptionState.DISABLED, "maintenance")

    [during] = await publish(server, order(2))
    await settle(server)

    [held] = await deliveries_of(server, sub_id)
    assert (held.event_id, held.state) == (before.event_id, "pending")
    assert hook.requests == []
    why = await server.services.deliveries.why(sub_id, EventRef(event_id=before.event_id))
    assert why.verdict == "held"
    assert any("disabled (maintenance)" in reason for reason in why.reasons)

    await server.services.subscriptions.resume(sub_id)

    [request] = await hook.wait_for(1)
    assert request.webhook_id == before.event_id
    await wait_state(server, held.delivery_id, "succeeded")
    await settle(server)
    assert len(hook.requests) == 1  # the event published while disabled is not delivered
    assert during.event_id not in {d.event_id for d in await deliveries_of(server, sub_id)}
    types = [t for t, _ in await system_events(server, sub_id)]
    assert types == ["eventbus.endpoint.disabled", "eventbus.endpoint.enabled"]
