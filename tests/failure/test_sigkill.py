"""SIGKILL one of three `eventbus serve` processes on one PostgreSQL database while it holds leased deliveries, under
load through all three: the other two send them once their leases expire, and nothing published is lost.

The webhook's attempt timeout is the smallest allowed (1 s), so a lease lasts 1 s × lease_ahead (4) + the 30 s
margin = 34 s (`DispatchSettings`; `eventbus serve` has no flag to shorten it): this test takes ≈ 40 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from eventbus.errors import UnavailableError
from eventbus.model import Event
from tests.conftest import ServerProcess, start_server_process
from tests.failure.cluster import Cluster
from tests.failure.receiver import HookReceiver

SCHEMA = "failure_sigkill"
FLAGS = ["--allow-destination", "127.0.0.1/32"]
BATCH = 10
PROCESSES = 3
LEASE_MARGIN_S = 3  # EVENTBUS_LEASE_MARGIN: the take-over after a crash comes this much after the attempt timeouts
LEASE_S = 1 * 4 + LEASE_MARGIN_S  # attempt timeout × lease_ahead (4) + lease margin


def orders(tag: str, first: int) -> list[Event]:
    return [
        Event.create(type="order.paid", source=f"/failure/{tag}", id=str(n), data={"n": n})
        for n in range(first, first + BATCH)
    ]


async def leased(client: EventBusClient, subscription_id: str) -> list[DeliveryStatus]:
    found: list[DeliveryStatus] = []
    token = ""
    for _ in range(100):  # bounded: far more pages than this test makes deliveries
        page, token = await client.list_deliveries(
            subscription_id=subscription_id, state="leased", page_size=100, page_token=token
        )
        found.extend(page)
        if not token:
            return found
    raise AssertionError("list_deliveries kept paging")


async def test_a_sigkilled_process_leases_are_sent_by_the_survivors_after_expiry(
    tmp_path: Path, pg_cluster: Cluster, server_process: list[ServerProcess], hook_receivers: list[HookReceiver]
) -> None:
    url = pg_cluster.url(schema=SCHEMA)
    victim, *survivors = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_server_process,
                tmp_path,
                store=url,
                extra=FLAGS,
                env={"EVENTBUS_LEASE_MARGIN": str(LEASE_MARGIN_S)},
            )
            for _ in range(PROCESSES)
        )
    )
    server_process.extend([victim, *survivors])
    victim_pid = victim.process.pid
    survivor_pids = {survivor.process.pid for survivor in survivors}
    killed_at: list[float] = []

    def hold(pid: int | None) -> bool:
        """The victim's requests are never answered, and its first one kills it: it dies with sends in flight
        and more leased behind them, before their 1 s timeout could record a failure (a timeout would make them
        retry 60 s later). A request of no known process comes from the dead victim: held too."""
        if pid in survivor_pids:
            return False
        if not killed_at:
            os.kill(victim_pid, signal.SIGKILL)
            killed_at.append(time.time())
        return True

    def by_survivors() -> set[str]:
        return receiver.answered_ids(survivors[0].process.pid) | receiver.answered_ids(survivors[1].process.pid)

    receiver = HookReceiver(senders=[victim_pid, *survivor_pids], hold=hold)
    await receiver.start()
    hook_receivers.append(receiver)
    event_ids: set[str] = set()
    async with AsyncExitStack() as stack:
        via_victim, *via_survivors = [
            await stack.enter_async_context(EventBusClient(server.grpc, timeout=10, publish_retries=0))
            for server in (victim, *survivors)
        ]
        subscription = await via_survivors[0].create_subscription(
            patterns=["order.*"], options={"url": receiver.url, "timeout": 1}
        )
        # Load through the three processes until the victim sends (and so holds leases), which kills it; bounded.
        deadline = time.monotonic() + 30
        n = 0
        while not killed_at:
            assert time.monotonic() < deadline, f"the victim sent nothing in 30 s:\n{victim.log()[-2000:]}"
            for client, tag in ((via_victim, "v"), (via_survivors[0], "s0"), (via_survivors[1], "s1")):
                with contextlib.suppress(UnavailableError):  # the victim may die during its publish
                    event_ids.update(r.event_id for r in await client.publish(orders(tag, n)))
            n += BATCH
            await receiver.happens(lambda: bool(killed_at), within=0.05)  # the next batch in 50 ms unless killed
        assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGKILL
        at_kill = {d.delivery_id: d for d in await leased(via_survivors[1], subscription.id)}
        assert at_kill, "nothing was leased when the victim died"
        # The survivors keep taking load after the kill.
        for _ in range(3):
            for number, client in enumerate(via_survivors):
                event_ids.update(r.event_id for r in await client.publish(orders(f"s{number}", n)))
            n += BATCH

        try:
            await receiver.wait_until(
                lambda: event_ids <= by_survivors(),
                within=LEASE_S + 20,
                what=lambda: (
                    f"every published event delivered by the survivors "
                    f"({len(event_ids - by_survivors())} of {len(event_ids)} missing)"
                ),
            )
        except AssertionError as exc:
            missing = sorted(event_ids - by_survivors())[:5]
            found = [(await via_survivors[0].list_deliveries(event_id=e))[0] for e in missing]
            raise AssertionError(f"{exc}; e.g. {found}; receiver saw {receiver.arrivals[:50]}") from None
        # The survivors record each attempt just after the receiver answered it.
        async with asyncio.timeout(10):
            while still := await leased(via_survivors[0], subscription.id):
                await receiver.happens(lambda: False, within=0.05)  # a poll interval
        assert not still
        statuses = [await via_survivors[1].get_delivery(delivery_id) for delivery_id in at_kill]

    held = [a for a in receiver.arrivals if not a.answered]
    assert held, "the victim held no request"
    # Only the victim's sends were held: all of them on the wire when it died (a later one is a survivor's,
    # wrongly attributed).
    assert [a for a in held if a.at > killed_at[0] + 1] == []
    held_by_victim = {a.webhook_id for a in held}
    # Every delivery leased at the kill succeeded; those the victim was sending went out again from a survivor,
    # and not before the victim's lease on them had expired.
    assert {s.state for s in statuses} == {"succeeded"}, [(s.delivery_id, s.state) for s in statuses]
    expiry = {d.event_id: d.next_attempt_at for d in at_kill.values()}
    resent_by: Counter[int | None] = Counter()
    for webhook_id in held_by_victim:
        lease_end = expiry.get(webhook_id)
        assert isinstance(lease_end, datetime), f"{webhook_id} was held by the victim but not leased at the kill"
        # The lease margin setting is the one in force: the lease ends within LEASE_S of the kill (a lease taken
        # just before it), not 30 s later as with the default margin.
        assert lease_end.timestamp() <= killed_at[0] + LEASE_S + 1, (webhook_id, lease_end.timestamp() - killed_at[0])
        sent_again = min(
            (a for a in receiver.arrivals if a.webhook_id == webhook_id and a.pid in survivor_pids and a.answered),
            key=lambda a: a.at,
        )
        assert sent_again.at >= lease_end.timestamp() - 0.5, (webhook_id, sent_again.at - killed_at[0])
        resent_by[sent_again.pid] += 1
    # Both survivors kept delivering (each sent some of the load); which one took the expired leases is the store's
    # choice (SKIP LOCKED), so it is reported, not required.
    sent_by = {pid: len(receiver.answered_ids(pid)) for pid in survivor_pids}
    assert all(sent_by.values()), f"a survivor sent nothing: {sent_by}"
    print(f"survivors sent {sent_by}; the victim's held sends went out again from {dict(resent_by)}")

    for survivor in survivors:
        survivor.signal(signal.SIGTERM)
    for survivor in survivors:
        assert await asyncio.to_thread(survivor.wait, 20) == 0, survivor.log()[-3000:]
        assert "Traceback" not in survivor.log(), survivor.log()[-3000:]
