"""Three `eventbus serve` processes on one PostgreSQL schema, real clients, and a webhook receiver on 127.0.0.1:0.

These tests always run on PostgreSQL (whatever EVENTBUS_TEST_STORE says), in a schema of their own made for the
module and dropped after it; they skip, saying why, when PostgreSQL does not answer at 127.0.0.1:5432. The processes
are started once per module (a test's subscriptions, groups and event types are its own, so tests do not meet).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from eventbus.model import Event
from tests.conftest import ServerProcess, start_server_process

T = TypeVar("T")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_DATABASE = "test"
PROCESSES = 3
SERVE_FLAGS = ["--allow-destination", "127.0.0.1/32"]


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Async work from a sync fixture (which may run while a test's loop is running)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()  # type: ignore[arg-type]


async def make_schema(schema: str) -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE):
            try:
                await conn.execute(f"CREATE DATABASE {PG_DATABASE}")
            except asyncpg.DuplicateDatabaseError:
                pass  # another session made it first
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"{PG_SERVER}/{PG_DATABASE}", timeout=5)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/{PG_DATABASE}", timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@dataclass
class Cluster:
    """The processes sharing one schema, and what they logged (JSON lines)."""

    store: str
    schema: str  # in the `test` database of PG_SERVER: a test reads the shared tables there to check them
    processes: list[ServerProcess]

    def attempts_by_process(self, subscription_id: str) -> list[int]:
        """How many attempts each process logged for this subscription (`delivery_attempted`)."""
        counts = []
        for process in self.processes:
            count = 0
            for line in process.log().splitlines():
                if '"delivery_attempted"' in line and subscription_id in line:
                    entry = json.loads(line)
                    count += entry.get("subscription_id") == subscription_id
            counts.append(count)
        return counts

    def check_alive(self) -> None:
        for n, process in enumerate(self.processes):
            code = process.process.poll()
            assert code is None, f"process {n} exited with {code}:\n{process.log()[-4000:]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    schema = f"mp_{uuid.uuid4().hex}"
    try:
        _run(lambda: make_schema(schema))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.skip(
            f"PostgreSQL at 127.0.0.1:5432 is not reachable ({type(exc).__name__}: {exc}): the multi-process "
            "tests need it (start it as README.md, Development, says)"
        )
    store = f"{PG_SERVER}/{PG_DATABASE}?schema={schema}"
    folder = tmp_path_factory.mktemp("multiprocess")
    started: list[ServerProcess] = []
    try:
        # Started side by side (each waits for its ready line): the migration runs once, under its advisory lock.
        with ThreadPoolExecutor(max_workers=PROCESSES) as pool:
            futures = [
                pool.submit(start_server_process, folder, store=store, extra=SERVE_FLAGS) for _ in range(PROCESSES)
            ]
            for future in futures:
                try:
                    started.append(future.result())
                except AssertionError:
                    for other in futures:
                        if other is not future and other.exception() is None:
                            started.append(other.result())
                    raise
        yield Cluster(store, schema, started)
    finally:
        for process in started:
            if process.process.poll() is None:
                process.process.kill()
                process.wait(10)
        _run(lambda: drop_schema(schema))


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[list[EventBusClient]]:
    """One client per process, in process order."""
    cluster.check_alive()
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(EventBusClient(p.grpc, timeout=10)) for p in cluster.processes]
    cluster.check_alive()


@dataclass
class Arrival:
    at: float  # time.monotonic() when the request reached the handler
    webhook_id: str
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1:0: answers `status` after holding each request `hold` seconds, and keeps
    every arrival and the most requests it ever had in flight at once."""

    status: int = 204
    hold: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            self.arrivals.append(Arrival(time.monotonic(), request.headers.get("webhook-id", ""), body))
            self.changed.set()
            if self.hold:
                await asyncio.sleep(self.hold)
            return web.Response(status=self.status)
        finally:
            self.in_flight -= 1

    def ids(self) -> Counter[str]:
        return Counter(a.webhook_id for a in self.arrivals)

    async def wait_for(self, count: int, *, within: float) -> None:
        """Until `count` requests arrived (distinct webhook ids), a wall-clock bound."""
        async with asyncio.timeout(within):
            while len(self.ids()) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """The receiver and its URL; a test sets its `status` and `hold` before sending to it."""
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, str(server.make_url("/hook"))
    finally:
        await server.close()


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = 10.0, what: str = "") -> T:
    """Poll (each check asks a server) every 20 ms until `check` answers something truthy; a wall-clock bound."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"not met in {within}s: {what}; last answer {last!r}")


async def publish_round_robin(clients: list[EventBusClient], event_type: str, count: int) -> None:
    """`count` events of `event_type` (ids of their own), each through the next process in turn."""
    for n in range(count):
        await clients[n % len(clients)].publish(Event.create(type=event_type, source="/mp", id=f"{event_type}-{n}"))


async def all_succeeded(client: EventBusClient, subscription_id: str, count: int) -> list[DeliveryStatus]:
    """The subscription's `count` deliveries once every one has succeeded (its attempts are then logged too)."""

    async def check() -> list[DeliveryStatus] | None:
        found, _ = await client.list_deliveries(subscription_id=subscription_id, page_size=1000)
        return found if len(found) == count and all(d.state == "succeeded" for d in found) else None

    return await eventually(check, what=f"{count} deliveries succeeded")


def unique_type(name: str) -> str:
    """An event type of this test's own: subscriptions of the module's other tests never match it."""
    return f"mp.{name}.{uuid.uuid4().hex[:8]}"


def token_bucket_violations(times: list[float], *, rate: float, burst: float, slack: float) -> list[tuple[int, int]]:
    """Pairs (i, j) of sorted arrival times with more arrivals in [t_i, t_j] than a bucket of `rate`/s and `burst`
    allows (with `slack` seconds of timing slack): j - i + 1 <= burst + rate * (t_j - t_i + slack)."""
    times = sorted(times)
    return [
        (i, j)
        for i in range(len(times))
        for j in range(i + 1, len(times))
        if j - i + 1 > burst + rate * (times[j] - times[i] + slack)
    ]
