"""SIGTERM drains a real `eventbus serve`: not ready at once, new calls refused, in-flight deliveries finish within
the grace (or are cancelled at its end and sent again at once by the next process), exit status 0; a second
signal cuts the drain short."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from eventbus.errors import UnavailableError
from eventbus.model import Event
from tests.conftest import ServerProcess, start_server_process
from tests.lifecycle.receiver import GatedReceiver

ALLOW = ["--allow-destination", "127.0.0.1/32"]
WAIT = 20.0  # seconds for anything that must happen on a busy machine


@pytest.fixture
async def receiver() -> AsyncIterator[GatedReceiver]:
    started = GatedReceiver()
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def serve(tmp_path: Path, grace: float, started: list[ServerProcess]) -> ServerProcess:
    running = await asyncio.to_thread(start_server_process, tmp_path, extra=[*ALLOW, "--shutdown-grace", str(grace)])
    started.append(running)
    return running


async def exit_status(running: ServerProcess, within: float = WAIT) -> int:
    return await asyncio.to_thread(running.wait, within)


async def deliver_one(running: ServerProcess, receiver: GatedReceiver, event_id: str) -> tuple[str, str]:
    """A webhook subscription and one event: returns (subscription id, evt_ id) once the receiver holds the send."""
    async with EventBusClient(running.grpc, timeout=10) as client:
        subscription = await client.create_subscription(
            patterns=["order.*"], options={"url": receiver.url, "timeout": 30}
        )
        [published] = await client.publish([Event.create(type="order.paid", source="/drain", id=event_id, data={})])
    await receiver.wait_for(lambda: published.event_id in receiver.arrivals, WAIT, "the send reached the receiver")
    return subscription.id, published.event_id


async def the_delivery(grpc_address: str, event_id: str) -> DeliveryStatus:
    async with EventBusClient(grpc_address, timeout=10) as client:
        [delivery], _ = await client.list_deliveries(event_id=event_id)
        return await client.get_delivery(delivery.delivery_id)


async def settled(grpc_address: str, event_id: str) -> DeliveryStatus:
    """The delivery once it is finished: its record commits just after the receiver answered (polled, bounded)."""
    try:
        async with asyncio.timeout(WAIT):
            while (delivery := await the_delivery(grpc_address, event_id)).finished_at is None:
                await asyncio.sleep(0.05)  # a poll interval, not a wait for something to happen
    except TimeoutError:
        raise AssertionError(f"the delivery of {event_id} did not finish within {WAIT:g} s") from None
    return delivery


class HealthWatch:
    """A `grpc.health.v1.Health/Watch` stream opened before the drain: the server pushes NOT_SERVING on it."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stream = health_pb2_grpc.HealthStub(self.channel).Watch(health_pb2.HealthCheckRequest(service=""))

    async def next_status(self) -> int:
        async with asyncio.timeout(WAIT):
            response = await self.stream.read()
        assert response is not grpc.aio.EOF, "the health stream ended without a status"
        return int(response.status)

    async def close(self) -> None:
        self.stream.cancel()
        await self.channel.close()


async def test_sigterm_lets_the_in_flight_delivery_finish_and_refuses_new_work(
    tmp_path: Path, server_process: list[ServerProcess], receiver: GatedReceiver
) -> None:
    running = await serve(tmp_path, grace=60, started=server_process)
    _, event_id = await deliver_one(running, receiver, "held-1")
    watch = HealthWatch(running.grpc)
    try:
        assert await watch.next_status() == health_pb2.HealthCheckResponse.SERVING
        running.signal(signal.SIGTERM)
        assert await watch.next_status() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await watch.close()

    # Draining, with the delivery held at the receiver: not ready, and new work refused on both transports.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{running.http}/readyz") as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
        async with http.get(f"http://{running.http}/healthz") as response:
            assert response.status == 200  # the process is up: a liveness probe must not kill it mid-drain
        structured = {"specversion": "1.0", "id": "late", "source": "/drain", "type": "order.paid", "data": {}}
        async with http.post(
            f"http://{running.http}/events",
            json=structured,
            headers={"Content-Type": "application/cloudevents+json"},
        ) as response:
            assert response.status == 503, await response.text()
            assert response.content_type == "application/problem+json"
            assert response.headers["Retry-After"].isdigit()
            assert response.headers.get("Connection", "").lower() == "close"
    async with EventBusClient(running.grpc, timeout=10, publish_retries=0) as client:
        with pytest.raises(UnavailableError):
            await client.publish([Event.create(type="order.paid", source="/drain", id="late", data={})])

    receiver.release.set()  # the in-flight send completes inside the grace
    assert await exit_status(running) == 0, running.log()[-3000:]
    log = running.log()
    assert "server_stopped" in log and "Traceback" not in log, log[-3000:]

    restarted = await serve(tmp_path, grace=5, started=server_process)
    delivery = await the_delivery(restarted.grpc, event_id)
    assert (delivery.state, delivery.attempt_count) == ("succeeded", 1), delivery
    assert receiver.arrivals == [event_id]  # sent once: recorded during the drain, not again after the restart
    async with EventBusClient(restarted.grpc, timeout=10) as client:
        events, _ = await client.list_events(page_size=100)
        assert [e.event.id for e in events] == ["held-1"]  # nothing of the refused publishes was stored
    restarted.signal(signal.SIGTERM)
    assert await exit_status(restarted) == 0


async def test_a_send_still_in_flight_when_the_grace_ends_is_sent_at_once_after_a_restart(
    tmp_path: Path, server_process: list[ServerProcess], receiver: GatedReceiver
) -> None:
    running = await serve(tmp_path, grace=1, started=server_process)
    _, event_id = await deliver_one(running, receiver, "held-2")
    running.signal(signal.SIGTERM)  # the receiver never answers this send: the grace (1 s) runs out
    assert await exit_status(running) == 0, running.log()[-3000:]
    assert "Traceback" not in running.log(), running.log()[-3000:]

    # The lease was 30 s × 4 + 30 s; a restart that waited for it would not send within WAIT.
    receiver.release.set()
    restarted = await serve(tmp_path, grace=5, started=server_process)
    await receiver.wait_for(lambda: receiver.answered.count(event_id) >= 1, WAIT, "sent again after the restart")
    delivery = await settled(restarted.grpc, event_id)
    assert delivery.state == "succeeded", delivery
    assert [a.error_class for a in delivery.attempts] == ["interrupted", None], delivery.attempts
    restarted.signal(signal.SIGTERM)
    assert await exit_status(restarted) == 0


async def test_a_second_signal_ends_the_drain_at_once(
    tmp_path: Path, server_process: list[ServerProcess], receiver: GatedReceiver
) -> None:
    running = await serve(tmp_path, grace=600, started=server_process)
    _, event_id = await deliver_one(running, receiver, "held-3")
    watch = HealthWatch(running.grpc)
    try:
        assert await watch.next_status() == health_pb2.HealthCheckResponse.SERVING
        running.signal(signal.SIGTERM)
        assert await watch.next_status() == health_pb2.HealthCheckResponse.NOT_SERVING  # the drain has begun
    finally:
        await watch.close()
    running.signal(signal.SIGINT)
    assert await exit_status(running, within=WAIT) == 0, running.log()[-3000:]  # not after 600 s
    log = running.log()
    assert "server_stopping_now" in log and "server_stopped" in log and "Traceback" not in log, log[-3000:]

    receiver.release.set()
    restarted = await serve(tmp_path, grace=5, started=server_process)
    delivery = await settled(restarted.grpc, event_id)  # recorded as interrupted, and due again at once
    assert [a.error_class for a in delivery.attempts] == ["interrupted", None], delivery.attempts
    restarted.signal(signal.SIGTERM)
    assert await exit_status(restarted) == 0
