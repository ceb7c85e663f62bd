"""A subscription's concurrency and rate limits hold across three processes (issue 7, multi-process): the
PostgreSQL store grants every send (pg_limits), so the receiver never sees more than the limits allow.

The events are published while the subscription is paused, then it is resumed: every process is woken at once
and leases its share, so each one has deliveries waiting for the same limits."""

from __future__ import annotations

from eventbus.client import EventBusClient
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
        # span t (100 ms of slack for the way from each process to the receiver).
        assert token_bucket_violations(times, rate=5, burst=5, slack=0.1) == []
        assert max(times) - min(times) >= (20 - 5) / 5 - 0.1  # the limit did hold them back
        assert set(inbox.ids().values()) == {1}
        await all_succeeded(clients[2], subscription.id, 20)
        attempts = cluster.attempts_by_process(subscription.id)
        assert sum(attempts) == 20
        assert sum(1 for n in attempts if n) >= 2, f"the sends are shared by the processes: {attempts}"
    finally:
        await clients[0].delete_subscription(subscription.id)
