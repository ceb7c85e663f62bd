"""A consumer group whose streams are on different processes shares its deliveries (issue 7, multi-process)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from eventbus.client import EventBusClient
from eventbus.model import Event
from eventbus.subscription import Subscription
from tests.multiprocess.conftest import eventually, unique_type

EVENTS = 60


async def test_a_group_with_a_stream_on_each_process_gets_each_event_once(clients: list[EventBusClient]) -> None:
    event_type = unique_type("group")
    group = f"workers-{event_type.rsplit('.', 1)[1]}"
    received: list[tuple[int, str, int]] = []  # (stream, event id, attempt)
    all_in = asyncio.Event()

    async def consume(stream: int, subscription: Subscription) -> None:
        async for delivery in subscription:
            received.append((stream, delivery.event.event_id, delivery.attempt))
            await asyncio.sleep(0.005)  # a consumer that works a little: the others get their share meanwhile
            await delivery.ack()
            if len({event_id for _, event_id, _ in received}) >= EVENTS:
                all_in.set()

    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(client.subscribe(group, [event_type], max_in_flight=4))
            for client in clients
        ]
        consumers = [asyncio.create_task(consume(n, stream)) for n, stream in enumerate(streams)]
        stack.push_async_callback(asyncio.gather, *consumers, return_exceptions=True)
        stack.callback(lambda: [task.cancel() for task in consumers])
        published = []
        for n in range(EVENTS):  # round robin: each process fans its own appends out
            [result] = await clients[n % len(clients)].publish(
                Event.create(type=event_type, source="/mp", id=f"{event_type}-{n}")
            )
            published.append(result.event_id)
        async with asyncio.timeout(15):
            await all_in.wait()

        async def settled() -> bool:
            # Every process answers for the group from the shared store: every delivery acked, none leased or due.
            for client in clients:
                status = await client.get_group(group)
                if (status.succeeded, status.pending, status.leased, status.dead) != (EVENTS, 0, 0, 0):
                    return False
            return True

        await eventually(settled, what="the group's deliveries all acked, as every process sees it")

    assert sorted(event_id for _, event_id, _ in received) == sorted(published)  # each event once, none twice
    assert {attempt for _, _, attempt in received} == {1}
    shares = [sum(1 for stream, _, _ in received if stream == n) for n in range(len(clients))]
    assert all(shares), f"every process's stream takes a share: {shares}"
