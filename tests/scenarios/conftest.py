"""Fixtures of the end-to-end scenarios: a real `eventbus serve` process (installed plugins, the test store: SQLite
in a temp dir or a fresh PostgreSQL schema; loopback destinations allowed), a gRPC client to it, the RD Station API
double and a webhook receiver on port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eventbus_rdstation.testing import RDStationDouble

from eventbus.client import EventBusClient
from tests.conftest import ServerProcess, start_server_process, store_url

T = TypeVar("T")
SERVE_FLAGS = ["--allow-destination", "127.0.0.1/32"]


class Gateway:
    """The server process and what a test talks to it with; `restart` kills it (SIGKILL) and starts it again."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store = store_url(tmp_path)  # the same store again on a restart (a schema of its own on PostgreSQL)
        self.processes: list[ServerProcess] = []
        self.process = self._start()

    def _start(self) -> ServerProcess:
        process = start_server_process(self.tmp_path, store=self.store, extra=SERVE_FLAGS)
        self.processes.append(process)
        return process

    @property
    def http(self) -> str:
        return f"http://{self.process.http}"

    def client(self) -> EventBusClient:
        return EventBusClient(self.process.grpc)

    def restart(self) -> None:
        self.process.process.kill()
        self.process.wait()
        self.process = self._start()

    def logs(self) -> str:
        return "".join(p.log() for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.process.poll() is None:
                process.process.kill()
                process.wait()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    running = Gateway(tmp_path)
    yield running
    running.stop()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[EventBusClient]:
    async with gateway.client() as connected:
        yield connected


@pytest.fixture
def double() -> RDStationDouble:
    return RDStationDouble(rate_limit=10_000)


@pytest.fixture
async def rd_url(double: RDStationDouble) -> AsyncIterator[str]:
    server = TestServer(double.app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class Inbox:
    """A webhook endpoint on 127.0.0.1:0 that answers 204 and keeps what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    running = Inbox()
    await running.server.start_server()
    try:
        yield running
    finally:
        await running.server.close()


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    sent = headers or {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=sent) as response:
        return response.status, await response.read()


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = 15.0, what: str = "") -> T:
    """Poll the server (each check is a gRPC call) until `check` answers something truthy; a wall-clock bound."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.02)  # a real process on its own clock: the one place a test polls
    raise AssertionError(f"not met in {within}s: {what}; last answer {last!r}")
