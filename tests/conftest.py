"""Shared fixtures: a real store chosen by EVENTBUS_TEST_STORE, an in-process server on port 0 with a manual
clock, a connected client, and a helper that runs `eventbus serve` as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from eventbus.bus.service import BusSettings
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.runtime import EventBusServer
from eventbus.store import open_store
from eventbus.store.base import Store

T = TypeVar("T")
TEST_STORE = os.environ.get("EVENTBUS_TEST_STORE", "sqlite")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_DATABASE = "test"
# Schemas made for this session's tests (one per test temp dir), dropped when the session ends.
_pg_schemas: dict[Path, str] = {}
_pg_checked: list[str] = []  # after the first check: "" if PostgreSQL answered, else why not


def _in_own_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run asyncio work from sync code that may itself be called inside a running loop (an async test)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


async def _ensure_test_database() -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/postgres", timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE):
            try:
                await conn.execute(f"CREATE DATABASE {PG_DATABASE}")
            except asyncpg.DuplicateDatabaseError:
                pass  # another test session made it first
    finally:
        await conn.close()


def _postgres_url(tmp_path: Path) -> str:
    """A fresh schema of the `test` database per test (the same one for every call with the same temp dir, so a
    test can reopen or restart on it); the test is skipped when PostgreSQL does not answer."""
    if not _pg_checked:
        try:
            _in_own_loop(_ensure_test_database)
            _pg_checked.append("")
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            _pg_checked.append(f"{type(exc).__name__}: {exc}")
    if _pg_checked[0]:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {_pg_checked[0]}")
    schema = _pg_schemas.setdefault(tmp_path, f"t_{uuid.uuid4().hex}")
    return f"{PG_SERVER}/{PG_DATABASE}?schema={schema}"


async def _drop_schemas(schemas: list[str]) -> None:
    conn = await asyncpg.connect(f"{PG_SERVER}/{PG_DATABASE}", timeout=5)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    """The PostgreSQL schemas a test made are dropped when it ends (one at a time, so no single teardown carries
    the whole session's drops under the per-test timeout, and the catalogue stays small)."""
    yield
    if _pg_schemas:
        made = sorted(set(_pg_schemas.values()))
        _pg_schemas.clear()
        _in_own_loop(lambda: _drop_schemas(made))


def store_url(tmp_path: Path) -> str:
    """A fresh store for one test: a SQLite file in the test's temp dir, or (EVENTBUS_TEST_STORE=postgresql) a fresh
    schema in the local PostgreSQL."""
    if TEST_STORE == "sqlite":
        return f"sqlite:///{tmp_path / 'eventbus.db'}"
    if TEST_STORE in ("postgresql", "postgres"):
        return _postgres_url(tmp_path)
    raise pytest.UsageError(f"EVENTBUS_TEST_STORE={TEST_STORE!r}: use 'sqlite' or 'postgresql'")


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
