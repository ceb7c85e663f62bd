"""At least once across a crash: deliveries leased by a killed `eventbus serve` are sent again after a restart,
with the same `webhook-id`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.client import EventBusClient
from eventbus.config import ListenAddress, ServerSettings
from eventbus.runtime import EventBusServer
from tests.conftest import ServerProcess, start_server_process, store_url
from tests.delivery.conftest import LOOPBACK
from tests.delivery.helpers import MakeReceiver, Reply, order


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
    second.signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, 15) == 0
    assert '"delivery_attempted"' in second.log()
