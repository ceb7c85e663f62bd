"""Webhook deliveries across three processes: each attempt made by exactly one process, and one circuit breaker
for all of them (issue 7, multi-process)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from tests.multiprocess.conftest import (
    Cluster,
    Receiver,
    all_succeeded,
    eventually,
    publish_round_robin,
    unique_type,
)

EVENTS = 40
THRESHOLD = 5  # HealthPolicy.failure_threshold: consecutive failures that open the circuit


async def all_deliveries(client: EventBusClient, subscription_id: str) -> list[DeliveryStatus]:
    found, _ = await client.list_deliveries(subscription_id=subscription_id, page_size=1000)
    return found


async def test_each_webhook_delivery_is_sent_once_by_one_of_the_processes(
    clients: list[EventBusClient], receiver: tuple[Receiver, str], cluster: Cluster
) -> None:
    inbox, url = receiver
    event_type = unique_type("hook")
    subscription = await clients[0].create_subscription(patterns=[event_type], options={"url": url})
    try:
        await publish_round_robin(clients, event_type, EVENTS)
        await inbox.wait_for(EVENTS, within=15)
        deliveries = await all_succeeded(clients[1], subscription.id, EVENTS)
        assert [d.attempt_count for d in deliveries] == [1] * EVENTS  # one attempt each: one process sent it
        assert set(inbox.ids().values()) == {1} and len(inbox.arrivals) == EVENTS  # each webhook-id once
        attempts = cluster.attempts_by_process(subscription.id)
        assert sum(attempts) == EVENTS
        assert sum(1 for n in attempts if n) >= 2, f"the sends are shared by the processes: {attempts}"
    finally:
        await clients[0].delete_subscription(subscription.id)


async def test_the_circuit_opens_for_every_process_after_the_threshold(
    clients: list[EventBusClient], receiver: tuple[Receiver, str], cluster: Cluster
) -> None:
    inbox, url = receiver
    inbox.status = 500
    event_type = unique_type("circuit")
    # One send at a time across the processes: exactly THRESHOLD attempts open the circuit (with concurrency c,
    # up to c - 1 more may already be in flight when it opens). Retries are far off: every attempt is a first one.
    subscription = await clients[0].create_subscription(
        patterns=[event_type], options={"url": url}, max_concurrency=1, retry_schedule=[timedelta(minutes=10)]
    )
    try:
        await publish_round_robin(clients, event_type, 12)
        for client in clients:  # each process's Admin API shows it open

            async def circuit_open(client: EventBusClient = client) -> bool:
                return (await client.get_subscription(subscription.id)).health.circuit == "open"

            await eventually(circuit_open, within=15, what="the circuit open")
        # Nothing more goes while it is open (the first probe is 30 s away): a bounded look, 1 s.
        opened_with = len(inbox.arrivals)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            inbox.changed.clear()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await inbox.changed.wait()
            except TimeoutError:
                break
        assert len(inbox.arrivals) == opened_with == THRESHOLD
        status = await clients[2].get_subscription(subscription.id)
        assert (status.health.circuit, status.health.consecutive_failures) == ("open", THRESHOLD)
        deliveries = await all_deliveries(clients[1], subscription.id)
        assert sum(d.attempt_count for d in deliveries) == THRESHOLD  # the held ones used no attempt
        assert {d.state for d in deliveries} == {"pending"}
        print("failed attempts by process:", cluster.attempts_by_process(subscription.id))
    finally:
        await clients[0].delete_subscription(subscription.id)
