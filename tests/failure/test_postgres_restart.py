"""PostgreSQL stopped (`pg_ctl stop -m immediate`) and started again under load, with one `eventbus serve` on it:
while the database is down, ingest answers UNAVAILABLE (gRPC) / 503 (`POST /events`) and `/readyz` 503 — never a
success for an event that was not committed; when it is back, the same process publishes, delivers and is
ready again by itself; every acknowledged event is stored exactly once and delivered."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import grpc

from eventbus.client import EventBusClient
from eventbus.grpc.convert import event_to_proto
from eventbus.model import Event
from eventbus.v1 import eventbus_pb2, eventbus_pb2_grpc
from tests.conftest import ServerProcess, start_server_process
from tests.failure.cluster import Cluster
from tests.failure.receiver import HookReceiver

SCHEMA = "failure_restart"
CALL_TIMEOUT = 5.0  # seconds a publish may take; a slower answer is a finding, not a pass
GRPC_PUBLISHERS = 3
PACE = 0.02  # seconds between one publisher's calls after a failure (a retry pace, not a synchronisation)


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # grpc | http | readyz
    started: float  # time.monotonic()
    ended: float
    outcome: str  # OK / a gRPC status code name / an HTTP status


@dataclass
class Load:
    """Publishers that each publish (source, id) events one at a time and retry an unanswered one until it is
    acknowledged (as a real client does: dedup makes the retry safe), plus a `/readyz` poller."""

    server: ServerProcess
    calls: list[Call] = field(default_factory=list)
    acked: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, id) -> acknowledgements
    event_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    stopping: bool = False

    async def record(self, call: Call) -> None:
        self.calls.append(call)
        async with self.changed:
            self.changed.notify_all()

    async def until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            outcomes = Counter((c.kind, c.outcome) for c in self.calls[-200:])
            raise AssertionError(f"not within {within:g} s: {what}; recent outcomes {dict(outcomes)}") from None

    def seen(self, kind: str, outcomes: set[str], since: float, until: float | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if c.kind == kind and c.outcome in outcomes and c.started >= since and (until is None or c.ended <= until)
        )

    async def grpc_publisher(self, number: int) -> None:
        async with grpc.aio.insecure_channel(self.server.grpc) as channel:
            publish = eventbus_pb2_grpc.EventBusStub(channel).Publish
            n = 0
            while not self.stopping:
                key = (f"/failure/grpc/{number}", str(n))
                event = Event.create(type="order.paid", source=key[0], id=key[1], data={"n": n})
                request = eventbus_pb2.PublishRequest(events=[event_to_proto(event)])
                started = time.monotonic()
                try:
                    response = await publish(request, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    await self.record(Call("grpc", started, time.monotonic(), exc.code().name))
                    await asyncio.sleep(PACE)
                    continue
                [result] = response.results
                self.acked[key] += 1
                self.event_ids[key] = result.event_id
                await self.record(Call("grpc", started, time.monotonic(), "OK"))
                n += 1

    async def http_publisher(self, session: aiohttp.ClientSession) -> None:
        n = 0
        while not self.stopping:
            key = ("/failure/http", str(n))
            body = json.dumps(
                {"specversion": "1.0", "type": "order.paid", "source": key[0], "id": key[1], "data": {"n": n}}
            )
            started = time.monotonic()
            try:
                async with session.post(
                    f"http://{self.server.http}/events",
                    data=body,
                    headers={"content-type": "application/cloudevents+json"},
                ) as response:
                    answer = await response.json(content_type=None)
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self.record(Call("http", started, time.monotonic(), type(exc).__name__))
                await asyncio.sleep(PACE)
                continue
            await self.record(Call("http", started, time.monotonic(), str(status)))
            if status in (200, 202):
                self.acked[key] += 1
                self.event_ids[key] = answer["events"][0]["event_id"]
                n += 1
            else:
                await asyncio.sleep(PACE)

    async def readiness(self, session: aiohttp.ClientSession) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                async with session.get(f"http://{self.server.http}/readyz") as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            await self.record(Call("readyz", started, time.monotonic(), outcome))
            await asyncio.sleep(0.05)  # a poll interval, not a synchronisation


async def stored_keys(url: str) -> Counter[tuple[str, str]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(f"SELECT source, id FROM {SCHEMA}.events WHERE source LIKE '/failure/%'")
    finally:
        await conn.close()
    return Counter((row["source"], row["id"]) for row in rows)


async def test_postgres_stopped_and_restarted_under_load(
    tmp_path: Path, pg_cluster: Cluster, server_process: list[ServerProcess], hook_receivers: list[HookReceiver]
) -> None:
    receiver = HookReceiver()
    await receiver.start()
    hook_receivers.append(receiver)
    server = await asyncio.to_thread(
        start_server_process,
        tmp_path,
        store=pg_cluster.url(schema=SCHEMA),
        extra=["--allow-destination", "127.0.0.1/32"],
    )
    server_process.append(server)
    async with EventBusClient(server.grpc, timeout=10) as client:
        await client.create_subscription(patterns=["order.*"], options={"url": receiver.url, "timeout": 1})
    load = Load(server)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(load.grpc_publisher(n)) for n in range(GRPC_PUBLISHERS)]
        tasks += [asyncio.create_task(load.http_publisher(session)), asyncio.create_task(load.readiness(session))]
        try:
            began = time.monotonic()
            await load.until(
                lambda: load.seen("grpc", {"OK"}, began) >= 30 and load.seen("http", {"202"}, began) >= 10,
                within=30,
                what="publishes acknowledged before the outage",
            )

            await asyncio.to_thread(pg_cluster.stop, "immediate")
            down = time.monotonic()  # from here until `starting`, nothing can commit
            await load.until(
                lambda: (
                    load.seen("grpc", {"UNAVAILABLE"}, down) >= 10
                    and load.seen("http", {"503"}, down) >= 5
                    # ≈ 2 s of polls at 50 ms: an outage long enough for the pool to fail, and fail again
                    and load.seen("readyz", {"503"}, down) >= 40
                ),
                within=30,
                what="UNAVAILABLE, 503 and /readyz 503 while PostgreSQL is down",
            )
            starting = time.monotonic()
            await asyncio.to_thread(pg_cluster.start)
            up = time.monotonic()
            await load.until(
                lambda: (
                    load.seen("grpc", {"OK"}, up) >= 10
                    and load.seen("http", {"202"}, up) >= 3
                    and load.seen("readyz", {"200"}, up) >= 1
                ),
                within=30,
                what="publishes acknowledged and /readyz 200 again, without restarting eventbus",
            )
        finally:
            load.stopping = True
            done, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()  # a publisher that crashed fails the test with its own error

    # While the database was down, not one call that started after the stop and ended before the start succeeded.
    outage = [c for c in load.calls if c.started >= down and c.ended <= starting]
    assert [c for c in outage if c.outcome in ("OK", "200", "202")] == []
    # Every failure, any time, was the documented one: UNAVAILABLE / 503 (never INTERNAL, UNKNOWN, 500, a
    # deadline or a hang).
    failures = Counter((c.kind, c.outcome) for c in load.calls if c.outcome not in ("OK", "200", "202"))
    assert set(failures) <= {("grpc", "UNAVAILABLE"), ("http", "503"), ("readyz", "503")}, failures
    assert server.process.poll() is None, server.log()

    # Every acknowledged event is stored exactly once (a retry of an event whose commit went unanswered is a
    # duplicate, answered with the original), and reaches the webhook at least once.
    stored = await stored_keys(pg_cluster.url())
    assert set(load.acked) <= set(stored), sorted(set(load.acked) - set(stored))[:10]
    assert {key: n for key, n in stored.items() if n != 1} == {}
    wanted = set(load.event_ids.values())
    await receiver.wait_until(
        lambda: wanted <= receiver.answered_ids(),
        within=60,
        what=lambda: f"every acknowledged event delivered ({len(wanted - receiver.answered_ids())} missing)",
    )

    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 20) == 0, server.log()
    assert "Traceback" not in server.log(), server.log()[-3000:]
