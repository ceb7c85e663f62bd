"""Regressions found by reviewing the dispatcher's lease-ahead queue: pause, circuit, probes, rate limit, resends
through an open circuit, dead rows in front of live ones."""

from __future__ import annotations

from datetime import timedelta

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
    subscription,
    wait_attempts,
    wait_state,
    wait_subscription,
)


async def test_pause_then_queued_sent(server: EventBusServer, receiver: MakeReceiver) -> None:
    """Pausing stops what the pump had queued: the next queued delivery is not sent when a slot frees."""
    hook = await receiver()
    hook.default = Reply(hold=True)
    endpoint = await create_endpoint(server, hook, max_concurrency=1)
    sub_id = endpoint.subscription.id
    await publish(server, *(order(n) for n in range(4)))
    await hook.wait_held(1)
    await settle(server)
    await server.services.subscriptions.pause(sub_id)
    await settle(server)
    n_before = len(hook.requests)
    hook.release()
    await settle(server)
    await settle(server)
    assert len(hook.requests) == n_before, "sent after pause"


async def test_circuit_open_queue_sent(server: EventBusServer, receiver: MakeReceiver) -> None:
    """A failing destination gets exactly the threshold's attempts before the circuit holds the rest."""
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, max_concurrency=1)
    sub_id = endpoint.subscription.id
    await publish(server, *(order(n) for n in range(10)))
    await wait_subscription(server, sub_id, lambda s: s.health.circuit == "open")
    await settle(server)
    await settle(server)
    await settle(server)
    assert len(hook.requests) == 5, f"{len(hook.requests)} sends, threshold 5"


async def test_probe_released_when_notified_during_lease(server: EventBusServer, receiver: MakeReceiver) -> None:
    """A probe leased while a wake-up arrives is sent, not given back (which held the probe slot for 90 s)."""
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, max_concurrency=1)
    sub_id = endpoint.subscription.id
    await open_circuit(server, hook, endpoint)
    hook.default = Reply(200)
    await settle(server)
    n = len(hook.requests)
    store = server.store
    original = store.lease_deliveries

    async def lease(*args, **kwargs):
        result = await original(*args, **kwargs)
        if any(d.probe for d in result):
            store.wakeups.notify([sub_id])  # e.g. an event published to it meanwhile
        return result

    store.lease_deliveries = lease  # type: ignore[method-assign]
    server.bus.clock.advance(  # type: ignore[attr-defined]
        timedelta(seconds=31)
    )
    await settle(server)
    await settle(server)
    await settle(server)
    store.lease_deliveries = original  # type: ignore[method-assign]
    assert len(hook.requests) > n  # the probe went at once (and, as it succeeded, the held ones after it)
    assert (await subscription(server, sub_id)).health.circuit == "closed"


async def test_rate_limit_burst(server: EventBusServer, receiver: MakeReceiver) -> None:
    """Tokens are taken as each send starts: what was queued while the destination was slow cannot burst."""
    hook = await receiver()
    hook.default = Reply(hold=True)
    await create_endpoint(server, hook, max_concurrency=2, rate_limit=2)
    await publish(server, *(order(n) for n in range(40)))
    await hook.wait_held(2)
    clock = server.bus.clock
    # the destination is slow: one request answered per second
    for _ in range(8):
        clock.advance(timedelta(seconds=1))
        await settle(server)
        hook.release(1)
        await settle(server)
        await settle(server)
    await settle(server)
    hook.default = Reply(200)
    start = len(hook.requests)
    hook.release()  # the destination recovers; clock does not move
    await settle(server)
    await settle(server)
    burst = len(hook.requests) - start
    assert burst <= 2


async def test_manual_resend_under_open_circuit(server: EventBusServer, receiver: MakeReceiver) -> None:
    """A resend goes through an open circuit now, not at the next probe."""
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook, max_concurrency=1, retry_schedule=[timedelta(seconds=1)])
    sub_id = endpoint.subscription.id
    [first] = await publish(server, order(0))
    await hook.wait_for(1)
    [dead] = [d for d in await deliveries_of(server, sub_id) if d.event_id == first.event_id]
    await wait_attempts(server, dead.delivery_id, 1)
    server.bus.clock.advance(  # type: ignore[attr-defined]
        timedelta(seconds=2)
    )
    await hook.wait_for(2)
    await wait_state(server, dead.delivery_id, "dead")
    await publish(server, *(order(n) for n in range(1, 4)))
    await wait_subscription(server, sub_id, lambda s: s.health.circuit == "open")
    for _ in range(3):
        await settle(server)
    n = len(hook.requests)
    hook.default = Reply(200)
    await server.services.deliveries.resend(dead.delivery_id)
    for _ in range(3):
        await settle(server)
    assert len(hook.requests) - n == 1


async def test_dead_rows_end_pump(server: EventBusServer, receiver: MakeReceiver) -> None:
    """Deliveries that die as they are leased (expired) do not hide the live ones behind them."""
    hook = await receiver()
    endpoint = await create_endpoint(server, hook, paused=True, max_pending_age=timedelta(hours=1))
    sub_id = endpoint.subscription.id
    await publish(server, *(order(n) for n in range(100)))
    server.bus.clock.advance(  # type: ignore[attr-defined]
        timedelta(hours=2)
    )
    [fresh] = await publish(server, order(999))
    await server.services.subscriptions.resume(sub_id)
    for _ in range(10):
        await settle(server)
    assert [r.webhook_id for r in hook.requests] == [fresh.event_id]
