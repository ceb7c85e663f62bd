"""PostgreSQL stopped (`pg_ctl stop -m immediate`) and started again under load, with three `eventbus serve`
processes on it, each taking gRPC publishes, `POST /events` and signed `POST /hooks/<source>` webhooks: while the
database is down, every process answers UNAVAILABLE (gRPC) / 503 with `Retry-After` (HTTP) and `/readyz` 503 —
never a success for an event that was not committed; when it is back, each process publishes, ingests and is
ready again by itself, without a restart; every acknowledged event is stored exactly once and delivered."""

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
from eventbus.signing import generate_secret, sign_v1
from eventbus.v1 import eventbus_pb2, eventbus_pb2_grpc
from tests.conftest import ServerProcess, start_server_process
from tests.failure.cluster import Cluster
from tests.failure.receiver import HookReceiver

SCHEMA = "failure_restart"
PROCESSES = 3
CALL_TIMEOUT = 5.0  # seconds a publish may take; a slower answer is a finding, not a pass
GRPC_PUBLISHERS = 2  # per process
PACE = 0.05  # seconds between one publisher's calls after a failure (a retry pace, not a synchronisation)
SOURCE = "partner"  # a Standard Webhooks source: its connector is bundled
HOOKS_SOURCE = f"/hooks/{SOURCE}"
SUCCESS = {"OK", "200", "202"}
# The only failures allowed, at any time: what the issue documents for a store that does not answer.
DOCUMENTED = {("grpc", "UNAVAILABLE"), ("http", "503"), ("hooks", "503"), ("readyz", "503")}


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # grpc | http | hooks | readyz
    process: int  # which of the processes answered
    started: float  # time.monotonic()
    ended: float
    outcome: str  # OK / a gRPC status code name / an HTTP status (a 503 without Retry-After says so)


@dataclass
class Load:
    """Publishers on every process that each publish (source, id) events one at a time and retry an unanswered one
    until it is acknowledged (as a real client does: dedup makes the retry safe), and a `/readyz` poller each."""

    servers: list[ServerProcess]
    secret: str
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
            outcomes = Counter((c.process, c.kind, c.outcome) for c in self.calls[-300:])
            raise AssertionError(f"not within {within:g} s: {what}; recent outcomes {dict(outcomes)}") from None

    def seen(self, process: int, kind: str, outcomes: set[str], since: float) -> int:
        return sum(
            1
            for c in self.calls
            if c.process == process and c.kind == kind and c.outcome in outcomes and c.started >= since
        )

    def everywhere(self, since: float, wanted: dict[tuple[str, str], int]) -> bool:
        """Every process answered at least `wanted[(kind, outcome)]` calls that way since `since`."""
        return all(
            self.seen(process, kind, {outcome}, since) >= count
            for process in range(len(self.servers))
            for (kind, outcome), count in wanted.items()
        )

    def acknowledged(self, key: tuple[str, str], event_id: str) -> None:
        self.acked[key] += 1
        self.event_ids[key] = event_id

    async def grpc_publisher(self, process: int, number: int) -> None:
        async with grpc.aio.insecure_channel(self.servers[process].grpc) as channel:
            publish = eventbus_pb2_grpc.EventBusStub(channel).Publish
            n = 0
            while not self.stopping:
                key = (f"/failure/grpc/{process}-{number}", str(n))
                event = Event.create(type="order.paid", source=key[0], id=key[1], data={"n": n})
                request = eventbus_pb2.PublishRequest(events=[event_to_proto(event)])
                started = time.monotonic()
                try:
                    response = await publish(request, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    await self.record(Call("grpc", process, started, time.monotonic(), exc.code().name))
                    await asyncio.sleep(PACE)
                    continue
                [result] = response.results
                self.acknowledged(key, result.event_id)
                await self.record(Call("grpc", process, started, time.monotonic(), "OK"))
                n += 1

    async def _post(
        self, kind: str, process: int, session: aiohttp.ClientSession, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str, dict[str, object] | None]:
        """POST and record the outcome: the status, or the error; a 503 must say when to come back."""
        started = time.monotonic()
        answer: dict[str, object] | None = None
        try:
            async with session.post(f"http://{self.servers[process].http}{path}", data=body, headers=headers) as got:
                raw = await got.read()
                outcome = str(got.status)
                if outcome in SUCCESS:
                    answer = json.loads(raw)
                if got.status == 503 and not got.headers.get("Retry-After"):
                    outcome = "503 without Retry-After"
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        await self.record(Call(kind, process, started, time.monotonic(), outcome))
        if outcome not in SUCCESS:
            await asyncio.sleep(PACE)
        return outcome, answer

    async def http_publisher(self, process: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not self.stopping:
            key = (f"/failure/http/{process}", str(n))
            body = json.dumps(
                {"specversion": "1.0", "type": "order.paid", "source": key[0], "id": key[1], "data": {"n": n}}
            ).encode()
            headers = {"content-type": "application/cloudevents+json"}
            outcome, answer = await self._post("http", process, session, "/events", body, headers)
            if outcome in SUCCESS and answer is not None:
                self.acknowledged(key, answer["events"][0]["event_id"])  # type: ignore[index]
                n += 1

    async def hook_sender(self, process: int, session: aiohttp.ClientSession) -> None:
        """A provider sending Standard Webhooks to the source: a message is sent again, same `webhook-id`, until
        it is acknowledged (each try signed afresh, as a sender's retry is)."""
        n = 0
        while not self.stopping:
            msg_id = f"msg_{process}_{n}"
            body = json.dumps({"type": "order.hooked", "data": {"id": msg_id, "n": n}}).encode()
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_v1(self.secret, msg_id, timestamp, body),
            }
            outcome, answer = await self._post("hooks", process, session, f"/hooks/{SOURCE}", body, headers)
            if outcome in SUCCESS and answer is not None:
                self.acknowledged((HOOKS_SOURCE, msg_id), answer["events"][0]["event_id"])  # type: ignore[index]
                n += 1

    async def readiness(self, process: int, session: aiohttp.ClientSession) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                async with session.get(f"http://{self.servers[process].http}/readyz") as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            await self.record(Call("readyz", process, started, time.monotonic(), outcome))
            await asyncio.sleep(0.05)  # a poll interval, not a synchronisation


async def stored_keys(url: str) -> Counter[tuple[str, str]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT source, id FROM {SCHEMA}.events WHERE source LIKE '/failure/%' OR source = $1", HOOKS_SOURCE
        )
    finally:
        await conn.close()
    return Counter((row["source"], row["id"]) for row in rows)


async def test_postgres_stopped_and_restarted_under_load(
    tmp_path: Path, pg_cluster: Cluster, server_process: list[ServerProcess], hook_receivers: list[HookReceiver]
) -> None:
    receiver = HookReceiver()
    await receiver.start()
    hook_receivers.append(receiver)
    servers = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_server_process,
                tmp_path,
                store=pg_cluster.url(schema=SCHEMA),
                extra=["--allow-destination", "127.0.0.1/32"],
                env={"EVENTBUS_LEASE_MARGIN": "3"},  # a send cut off by the outage is taken over in seconds
            )
            for _ in range(PROCESSES)
        )
    )
    server_process.extend(servers)
    pids = [server.process.pid for server in servers]
    secret = generate_secret()
    async with EventBusClient(servers[0].grpc, timeout=10) as client:
        await client.create_subscription(
            patterns=["order.*", "standardwebhooks.**"], options={"url": receiver.url, "timeout": 1}
        )
        await client.create_source(SOURCE, "standardwebhooks", secrets=[secret])
    load = Load(servers, secret)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(load.grpc_publisher(p, n)) for p in range(PROCESSES) for n in range(GRPC_PUBLISHERS)
        ]
        for p in range(PROCESSES):
            tasks += [
                asyncio.create_task(load.http_publisher(p, session)),
                asyncio.create_task(load.hook_sender(p, session)),
                asyncio.create_task(load.readiness(p, session)),
            ]
        try:
            began = time.monotonic()
            await load.until(
                lambda: load.everywhere(began, {("grpc", "OK"): 10, ("http", "202"): 3, ("hooks", "202"): 3}),
                within=30,
                what="publishes and webhooks acknowledged by every process before the outage",
            )

            await asyncio.to_thread(pg_cluster.stop, "immediate")
            down = time.monotonic()  # from here until `starting`, nothing can commit
            await load.until(
                lambda: load.everywhere(
                    down,
                    # /readyz: ≈ 2 s of polls at 50 ms, an outage long enough for each pool to fail, and fail again
                    {("grpc", "UNAVAILABLE"): 5, ("http", "503"): 3, ("hooks", "503"): 3, ("readyz", "503"): 40},
                ),
                within=30,
                what="UNAVAILABLE, 503 and /readyz 503 from every process while PostgreSQL is down",
            )
            starting = time.monotonic()
            await asyncio.to_thread(pg_cluster.start)
            up = time.monotonic()
            await load.until(
                lambda: load.everywhere(
                    up, {("grpc", "OK"): 5, ("http", "202"): 2, ("hooks", "202"): 2, ("readyz", "200"): 1}
                ),
                within=30,
                what="every process acknowledging publishes and webhooks and /readyz 200 again, none restarted",
            )
        finally:
            load.stopping = True
            done, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()  # a publisher that crashed fails the test with its own error

    # While the database was down, not one call to any process that started after the stop and ended before the
    # start succeeded.
    outage = [c for c in load.calls if c.started >= down and c.ended <= starting]
    assert [c for c in outage if c.outcome in SUCCESS] == []
    # Every failure, any time, on every process, was the documented one: UNAVAILABLE / 503 with Retry-After (never
    # INTERNAL, UNKNOWN, 500, a 503 without Retry-After, a deadline or a hang).
    failures = Counter((c.kind, c.outcome) for c in load.calls if c.outcome not in SUCCESS)
    assert set(failures) <= DOCUMENTED, failures
    # The same processes throughout: each came back by itself.
    assert [server.process.pid for server in servers] == pids
    for server in servers:
        assert server.process.poll() is None, server.log()[-3000:]

    # Every acknowledged event is stored exactly once (a retry of an event whose commit went unanswered is a
    # duplicate, answered with the original), and reaches the webhook at least once.
    stored = await stored_keys(pg_cluster.url())
    assert {key[0].rsplit("/", 1)[0] for key in load.acked} == {"/failure/grpc", "/failure/http", "/hooks"}
    assert set(load.acked) <= set(stored), sorted(set(load.acked) - set(stored))[:10]
    assert {key: n for key, n in stored.items() if n != 1} == {}
    wanted = set(load.event_ids.values())
    settled = time.monotonic()
    await receiver.wait_until(
        lambda: wanted <= receiver.answered_ids(),
        within=60,
        what=lambda: f"every acknowledged event delivered ({len(wanted - receiver.answered_ids())} missing)",
    )

    print(
        f"load {down - began:.1f} s, outage {starting - down:.1f} s, back {settled - up:.1f} s after the start, "
        f"delivered {time.monotonic() - settled:.1f} s later; {len(wanted)} events, calls {dict(failures)}"
    )
    for server in servers:
        server.signal(signal.SIGTERM)
    for server in servers:
        assert await asyncio.to_thread(server.wait, 20) == 0, server.log()[-3000:]
        assert "Traceback" not in server.log(), server.log()[-3000:]
