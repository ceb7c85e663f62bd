"""The server as an operator runs it: a real `eventbus serve` process, signals, restarts, the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from eventbus.client import EventBusClient
from eventbus.errors import DeliveryLeaseLostError
from eventbus.model import Event
from tests.conftest import ServerProcess, start_server_process, store_url


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def events(count: int, prefix: str = "e") -> list[Event]:
    return [Event.create(type="order.paid", source="/shop", id=f"{prefix}-{i}", data={"i": i}) for i in range(count)]


async def test_sigterm_drains_in_flight_then_exits(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    running = start_server_process(tmp_path)
    server_process.append(running)
    async with EventBusClient(running.grpc) as bus:
        await bus.publish(events(2))
        subscription = bus.subscribe("drain", ["order.*"], start="earliest", max_in_flight=1)
        first = await asyncio.wait_for(anext(subscription), 10)
        running.signal(signal.SIGTERM)
        # Not ready first: /readyz turns 503 and health NOT_SERVING while the in-flight delivery is still held.
        async with aiohttp.ClientSession() as http:
            for _ in range(500):
                async with http.get(f"http://{running.http}/readyz") as response:
                    if response.status == 503:
                        assert response.content_type == "application/problem+json"
                        break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("/readyz never turned 503 after SIGTERM")
        await first.ack()  # the in-flight call finishes inside the grace period
        await subscription.close()
    assert running.wait(30) == 0
    log = running.log()
    assert "server_stopping" in log and "server_stopped" in log

    restarted = start_server_process(tmp_path, store=store_url(tmp_path))
    server_process.append(restarted)
    async with EventBusClient(restarted.grpc) as bus:
        async with bus.subscribe("drain", ["order.*"]) as subscription:
            second = await asyncio.wait_for(anext(subscription), 10)
            assert second.event.event.id == "e-1"  # e-0 was acked during the drain: not sent again
            await second.ack()
        group = await bus.get_group("drain")
        assert (group.succeeded, group.lag) == (2, 0)


async def test_acknowledged_events_survive_sigkill(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    running = start_server_process(tmp_path)
    server_process.append(running)
    async with EventBusClient(running.grpc) as bus:
        subscription = bus.subscribe("keeper", ["order.*"])
        await subscription.start()  # the durable group exists before anything is published
        acknowledged = []
        for start in range(0, 300, 30):
            acknowledged += await asyncio.gather(*(bus.publish(e) for e in events(30, f"k{start}")))
        running.signal(signal.SIGKILL)
        running.wait(10)
        await subscription.close()
    published = {r[0].event_id for r in acknowledged}
    assert len(published) == 300

    restarted = start_server_process(tmp_path, store=store_url(tmp_path))
    server_process.append(restarted)
    async with EventBusClient(restarted.grpc) as bus:
        stored, token = [], ""
        while True:
            page, token = await bus.list_events(page_size=100, page_token=token)
            stored += page
            if not token:
                break
        assert {s.event_id for s in stored} == published
        delivered: set[str] = set()
        async with bus.subscribe("keeper", ["order.*"], max_in_flight=500) as subscription:
            while delivered != published:
                delivery = await asyncio.wait_for(anext(subscription), 10)
                delivered.add(delivery.event.event_id)
                await delivery.ack()


async def test_client_reconnects_and_rejoins_after_restart(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    running = start_server_process(tmp_path)
    server_process.append(running)
    port = int(running.grpc.rsplit(":", 1)[1])
    async with EventBusClient(running.grpc) as bus, bus.subscribe("durable", ["order.*"]) as subscription:
        await bus.publish(events(1, "before"))
        first = await asyncio.wait_for(anext(subscription), 10)
        await first.ack()
        held = await bus.publish(events(1, "held"))
        unacked = await asyncio.wait_for(anext(subscription), 10)
        running.signal(signal.SIGKILL)
        running.wait(10)
        restarted = start_server_process(tmp_path, store=store_url(tmp_path), grpc_port=port)
        server_process.append(restarted)
        # The old stream is gone: its delivery's ack says so, and the delivery comes back on the new stream.
        try:
            await unacked.ack()
            raise AssertionError("an ack on a dead stream must not succeed")
        except DeliveryLeaseLostError:
            pass
        await bus.publish(events(1, "after"))  # publish retries while the server restarts
        seen = set()
        while seen != {"held-0", "after-0"}:
            delivery = await asyncio.wait_for(anext(subscription), 30)
            seen.add(delivery.event.event.id)
            await delivery.ack()
        assert subscription.reconnects >= 1
        assert held[0].event_id


async def test_cli_publish_batch_and_tail_count(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    running = start_server_process(tmp_path)
    server_process.append(running)
    batch = tmp_path / "batch.jsonl"
    lines = [
        {"specversion": "1.0", "id": f"b-{i}", "source": "/cli", "type": "cli.test", "data": {"i": i}} for i in range(5)
    ]
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    published = run_cli("publish", "--server", running.grpc, "--batch", str(batch))
    assert published.returncode == 0, published.stderr
    results = [json.loads(line) for line in published.stdout.splitlines()]
    assert [r["id"] for r in results] == [f"b-{i}" for i in range(5)]
    assert all(r["event_id"].startswith("evt_") and r["duplicate"] is False for r in results)
    assert [r["seq"] for r in results] == sorted(r["seq"] for r in results)

    again = run_cli("publish", "--server", running.grpc, "--type", "cli.test", "--source", "/cli", "--id", "b-0")
    assert again.returncode == 0 and json.loads(again.stdout)["duplicate"] is True

    tailed = run_cli("tail", "--server", running.grpc, "--from", "earliest", "--count", "3", "--pattern", "cli.*")
    assert tailed.returncode == 0, tailed.stderr
    printed = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert [p["id"] for p in printed] == ["b-0", "b-1", "b-2"]
    assert printed[0]["data"] == {"i": 0} and printed[0]["specversion"] == "1.0" and printed[0]["seq"] >= 1

    groups = run_cli("groups", "list", "--server", running.grpc, "--json")
    assert groups.returncode == 0 and groups.stdout == ""  # the tail's ephemeral group went with it


def test_cli_errors_exit_codes(tmp_path: Path) -> None:
    bad_json = run_cli("publish", "--type", "a.b", "--source", "/s", "--data", "{not json")
    assert bad_json.returncode == 2 and "--data is not valid JSON" in bad_json.stderr
    bad_type = run_cli("publish", "--type", "a b", "--source", "/s")
    assert bad_type.returncode == 2 and "type" in bad_type.stderr
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"specversion": "1.0", "id": "x", "source": "/s", "type": "a.b"}\n{"id": ""}\n')
    batch = run_cli("publish", "--batch", str(bad_line))
    assert batch.returncode == 2 and "line 2" in batch.stderr
    unreachable = run_cli("publish", "--server", "127.0.0.1:1", "--type", "a.b", "--source", "/s")
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") >= 1
    usage = run_cli("tail", "--count", "0")
    assert usage.returncode == 2


def test_serve_refuses_open_non_loopback_listen(tmp_path: Path) -> None:
    refused = run_cli("serve", "--grpc-listen", "0.0.0.0:0", "--store", store_url(tmp_path))
    assert refused.returncode == 2 and "api-key" in refused.stderr


def test_second_server_on_the_same_sqlite_file_is_refused(tmp_path: Path, server_process: list[ServerProcess]) -> None:
    server_process.append(start_server_process(tmp_path))
    second = run_cli(
        "serve", "--store", store_url(tmp_path), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"
    )
    assert second.returncode == 1
    assert "in use by another eventbus process" in second.stderr


async def test_ephemeral_subscription_resumes_after_what_it_saw(
    tmp_path: Path, server_process: list[ServerProcess]
) -> None:
    running = start_server_process(tmp_path)
    server_process.append(running)
    port = int(running.grpc.rsplit(":", 1)[1])
    async with EventBusClient(running.grpc) as bus:
        await bus.publish(events(2, "old"))
        async with bus.subscribe(None, ["order.*"], start="earliest") as subscription:
            first = await asyncio.wait_for(anext(subscription), 10)
            assert first.event.event.id == "old-0"
            await first.ack()
            held = await asyncio.wait_for(anext(subscription), 10)
            assert held.event.event.id == "old-1"  # handed out, never acked
            running.signal(signal.SIGKILL)
            running.wait(10)
            restarted = start_server_process(tmp_path, store=store_url(tmp_path), grpc_port=port)
            server_process.append(restarted)
            await bus.publish(events(1, "new"))
            again = [(await asyncio.wait_for(anext(subscription), 30)).event.event.id for _ in range(2)]
            # The new group starts at the unacked old-1 (owed), not at old-0 (acked) nor after old-1.
            assert again == ["old-1", "new-0"]
            assert subscription.reconnects >= 1
