"""At least once across a crash: deliveries leased by a killed `eventbus serve` are sent again after a restart,
with the same `webhook-id`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.client import EventBusClient
from eventbus.config import ListenAddress, ServerSettings
from eventbus.runtime import EventBusServer
from tests.conftest import TEST_STORE, ServerProcess, start_server_process, store_url
from tests.delivery.conftest import LOOPBACK, Servers
from tests.delivery.helpers import MakeReceiver, Reply, create_endpoint, delivery_of, order, publish


@pytest.mark.skipif(
    TEST_STORE != "sqlite",
    reason="SQLite (one process per file) releases a dead process's leases on open; on PostgreSQL other processes "
    "may hold live leases, so a dead one's expire instead (issue 7's multi-process failure tests)",
)
async def test_a_killed_servers_leased_delivery_is_sent_after_restart(
    tmp_path: Path, receiver: MakeReceiver, server_process: list[ServerProcess]
) -> None:
    hook = await receiver()
    hook.replies.append(Reply(200, hold=True))  # the first request hangs until the server is gone
    url = store_url(tmp_path)
    # The subprocess owns the file while it runs: create the endpoint through the service layer first.
    setup = EventBusServer(
        ServerSettings(
            store_url=url,
            grpc_listen=ListenAddress("127.0.0.1", 0),
            http_listen=ListenAddress("127.0.0.1", 0),
            allow_destinations=LOOPBACK,
        )
    )
    await setup.start()
    try:
        await setup.services.subscriptions.create(
            SubscriptionInput(patterns=["order.*"], options={"url": hook.url, "timeout": 30})
        )
    finally:
        await setup.stop(0)
    flags = ["--allow-destination", "127.0.0.1/32"]

    first = await asyncio.to_thread(start_server_process, tmp_path, store=url, extra=flags)
    server_process.append(first)
    async with EventBusClient(first.grpc, timeout=10) as client:
        [published] = await client.publish(order())
    await hook.wait_held(1, within=10)
    first.signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL

    second = await asyncio.to_thread(start_server_process, tmp_path, store=url, extra=flags)
    server_process.append(second)
    before, again = await hook.wait_for(2, within=10)

    assert before.webhook_id == again.webhook_id == published.event_id
    assert again.timestamp >= before.timestamp
    async with EventBusClient(second.grpc, timeout=10) as client:

        async def attempts() -> list[tuple[str | None, str]]:
            [delivery] = (await client.list_deliveries(event_id=published.event_id))[0]
            return [(a.error_class, a.outcome) for a in (await client.get_delivery(delivery.delivery_id)).attempts]

        async with asyncio.timeout(10):
            while len(found := await attempts()) < 2:
                await asyncio.sleep(0.02)
    # The killed attempt is in the log (it may have reached the receiver), then the one that succeeded.
    assert found == [("interrupted", "retry"), (None, "succeeded")]
    second.signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, 15) == 0
    assert '"delivery_attempted"' in second.log()


async def test_a_send_cut_short_by_shutdown_is_logged_as_interrupted_and_due_again(
    servers: Servers, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    hook.replies.append(Reply(200, hold=True))
    server = await servers.start()
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    await hook.wait_held(1)
    await servers.stop(server)  # the grace (0.2 s) runs out while the request hangs
    again = await servers.start()
    _, attempts = await again.services.deliveries.get(
        (await delivery_of(again, endpoint.subscription.id, published.event_id)).delivery_id
    )
    assert (attempts[0].error_class, attempts[0].outcome) == ("interrupted", "retry")
    await hook.wait_for(2)  # sent again by the next server, same webhook-id
    assert hook.requests[1].webhook_id == published.event_id
