"""Shared fixtures: a real store chosen by EVENTBUS_TEST_STORE, an in-process server on port 0 with a manual
clock, a connected client, and a helper that runs `eventbus serve` as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventbus.bus.service import BusSettings
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.runtime import EventBusServer
from eventbus.store import open_store
from eventbus.store.base import Store

TEST_STORE = os.environ.get("EVENTBUS_TEST_STORE", "sqlite")


def store_url(tmp_path: Path) -> str:
    """A fresh store for one test: a SQLite file in the test's temp dir (PostgreSQL joins in its own issue)."""
    if TEST_STORE == "sqlite":
        return f"sqlite:///{tmp_path / 'eventbus.db'}"
    raise pytest.UsageError(f"EVENTBUS_TEST_STORE={TEST_STORE!r}: this build knows only 'sqlite'")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(store_url(tmp_path))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def fast_settings(**overrides: object) -> BusSettings:
    """Bus settings for tests: upkeep only when a test asks for it."""
    values: dict[str, object] = {"janitor_every": 3600.0}
    values.update(overrides)
    return BusSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def bus_settings() -> BusSettings:
    return fast_settings()


@pytest.fixture
def server_settings(tmp_path: Path) -> ServerSettings:
    """Settings of the in-process server; a module overrides this fixture to change them (e.g. an API key)."""
    return ServerSettings(
        store_url=store_url(tmp_path),
        grpc_listen=ListenAddress("127.0.0.1", 0),
        http_listen=ListenAddress("127.0.0.1", 0),
        shutdown_grace=2.0,
    )


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    """The whole service in this process: real SQLite, real gRPC and HTTP on port 0, the manual clock."""
    running = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def client(server: EventBusServer) -> AsyncIterator[EventBusClient]:
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), timeout=10) as connected:
        yield connected


@pytest.fixture
def http_url(server: EventBusServer) -> str:
    assert server.addresses is not None
    return f"http://{server.addresses.http}"


_READY = re.compile(r'"grpc": "([^"]+)", "http": "([^"]+)"')


@dataclass
class ServerProcess:
    """`eventbus serve` in a subprocess, as an operator runs it (JSON logs on stderr)."""

    process: subprocess.Popen[bytes]
    grpc: str
    http: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


def start_server_process(
    tmp_path: Path,
    *,
    store: str | None = None,
    grpc_port: int = 0,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a server and wait for its `server_ready` line (synchronised on the log, not on a sleep)."""
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    handle = log_path.open("wb")
    command = [
        sys.executable,
        "-m",
        "eventbus",
        "serve",
        "--store",
        store or store_url(tmp_path),
        "--grpc-listen",
        f"127.0.0.1:{grpc_port}",
        "--http-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        *(extra or []),
    ]
    environment = {**os.environ, **env} if env else None
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, cwd=tmp_path, env=environment)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _READY.search(log_path.read_text(errors="replace"))
        if match:
            return ServerProcess(process, match.group(1), match.group(2), log_path)
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"server not ready in 30 s:\n{log_path.read_text()}")


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Processes started in the test with `start_server_process` go here and are killed at the end."""
    started: list[ServerProcess] = []
    yield started
    for running in started:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGKILL)
            running.process.wait(10)
