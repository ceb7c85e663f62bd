"""A subscription's concurrency and rate limits, and a plugin kind's rate shared by key, hold across three processes
(issue 7, multi-process): the PostgreSQL store grants every send (pg_limits), so the receiver never sees more than
the limits allow.

The events are published while the subscriptions are paused, then they are resumed: every process is woken at once
and leases its share, so each one has deliveries waiting for the same limits."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eventbus.client import EventBusClient
from eventbus.model import Event
from tests.multiprocess.conftest import (
    Cluster,
    Receiver,
    all_succeeded,
    publish_round_robin,
    token_bucket_violations,
    unique_type,
)


async def test_max_concurrency_bounds_the_requests_in_flight_of_every_process_together(
    clients: list[EventBusClient], receiver: tuple[Receiver, str], cluster: Cluster
) -> None:
    inbox, url = receiver
    inbox.hold = 0.25  # a slow receiver: the deliveries others leased wait for a slot
    event_type = unique_type("concurrency")
    subscription = await clients[0].create_subscription(
        patterns=[event_type], options={"url": url}, max_concurrency=2, paused=True
    )
    try:
        await publish_round_robin(clients, event_type, 12)
        await clients[1].resume_subscription(subscription.id)
        await inbox.wait_for(12, within=15)
        assert inbox.most_in_flight == 2  # never more than the limit, and the limit used
        assert set(inbox.ids().values()) == {1}
        await all_succeeded(clients[2], subscription.id, 12)
        attempts = cluster.attempts_by_process(subscription.id)
        assert sum(attempts) == 12
        assert sum(1 for n in attempts if n) >= 2, f"the sends are shared by the processes: {attempts}"
    finally:
        await clients[0].delete_subscription(subscription.id)


async def test_rate_limit_holds_across_the_processes(
    clients: list[EventBusClient], receiver: tuple[Receiver, str], cluster: Cluster
) -> None:
    inbox, url = receiver
    event_type = unique_type("rate")
    subscription = await clients[0].create_subscription(
        patterns=[event_type], options={"url": url}, rate_limit=5, paused=True
    )
    try:
        await publish_round_robin(clients, event_type, 20)
        await clients[1].resume_subscription(subscription.id)
        await inbox.wait_for(20, within=15)
        times = [arrival.at for arrival in inbox.arrivals]
        # A token bucket of 5/s with a burst of 5 for all processes together: at most 5 + 5·t arrivals in any
        # span t (250 ms of slack for the way from each process to the receiver, on a loaded 2-core machine).
        assert token_bucket_violations(times, rate=5, burst=5, slack=0.25) == []
        assert max(times) - min(times) >= (20 - 5) / 5 - 0.1  # the limit did hold them back
        assert set(inbox.ids().values()) == {1}
        await all_succeeded(clients[2], subscription.id, 20)
        attempts = cluster.attempts_by_process(subscription.id)
        assert sum(attempts) == 20
        assert sum(1 for n in attempts if n) >= 2, f"the sends are shared by the processes: {attempts}"
    finally:
        await clients[0].delete_subscription(subscription.id)


class RDStation:
    """RD Station's conversions endpoint on 127.0.0.1:0: every request's arrival time, API key and lead's email."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.append((time.monotonic(), request.query.get("api_key", ""), body["payload"]["email"]))
        self.changed.set()
        return web.json_response({"event_uuid": "ok"})

    async def wait_for(self, count: int, *, within: float) -> None:
        async with asyncio.timeout(within):
            while len(self.arrivals) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def rd_station() -> AsyncIterator[tuple[RDStation, str]]:
    """The fake RD Station and the `base_url` that sends to it (http is allowed to loopback)."""
    state = RDStation()
    app = web.Application()
    app.router.add_post("/platform/conversions", state.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, str(server.make_url("/")).rstrip("/")
    finally:
        await server.close()


async def test_a_plugin_kinds_rate_shared_by_account_holds_across_the_processes(
    clients: list[EventBusClient], rd_station: tuple[RDStation, str], cluster: Cluster
) -> None:
    """Three `rdstation` subscriptions labelled with one RD account (each its own API key) share its budget of
    300 a minute (5/s, the bundled plugin's `RateLimit` by account), whichever process sends."""
    inbox, base_url = rd_station
    event_type = unique_type("shared-rate")
    mapping = {"event_type": "CONVERSION", "payload": {"conversion_identifier": "mp", "email": "$.data.email"}}
    subscriptions = [
        await client.create_subscription(
            "rdstation",
            patterns=[event_type],
            options={
                "base_url": base_url,
                "api_key": f"key-{n}",
                "account": f"acme-{event_type}",
                "rate_limit_per_minute": 300,
                "mapping": mapping,
            },
            paused=True,
        )
        for n, client in enumerate(clients)
    ]
    try:
        for n in range(10):
            event = Event.create(type=event_type, source="/mp", id=f"{event_type}-{n}", data={"email": f"{n}@x.io"})
            await clients[n % len(clients)].publish(event)
        for client, subscription in zip(clients, subscriptions, strict=True):
            await client.resume_subscription(subscription.id)
        await inbox.wait_for(30, within=30)
        times = [at for at, _, _ in inbox.arrivals]
        # One token bucket of 5/s with a burst of 5 for all three subscriptions in all three processes: at most
        # 5 + 5·t arrivals in any span t (250 ms of slack for the way from each process to the receiver, on a
        # loaded 2-core machine).
        assert token_bucket_violations(times, rate=5, burst=5, slack=0.25) == []
        assert max(times) - min(times) >= (30 - 5) / 5 - 0.1  # the limit did hold them back
        sent = Counter((key, email) for _, key, email in inbox.arrivals)
        assert len(sent) == 30 and set(sent.values()) == {1}
        attempts = [0] * len(clients)
        for subscription in subscriptions:
            await all_succeeded(clients[2], subscription.id, 10)
            attempts = [a + b for a, b in zip(attempts, cluster.attempts_by_process(subscription.id), strict=True)]
        assert sum(attempts) == 30
        assert sum(1 for n in attempts if n) >= 2, f"the sends are shared by the processes: {attempts}"
    finally:
        for subscription in subscriptions:
            await clients[0].delete_subscription(subscription.id)
