"""Fixtures of the observability tests: structlog configured exactly as `eventbus serve` configures it (the JSON
chain, scrubber included) but writing into memory at debug level, an in-process server with an admin API key that
may deliver to loopback receivers, and OpenTelemetry switched on with the SDK's in-memory span exporter."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from eventbus import logs, tracing
from eventbus.bus.dispatch import DispatchSettings
from eventbus.bus.service import BusSettings
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.runtime import EventBusServer
from eventbus.store.records import HealthPolicy
from tests.delivery.helpers import Receiver

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
ADMIN_KEY = f"ebk_obs_{secrets.token_hex(20)}"  # the server's `--api-key`, fresh per session: grep-able, unique


class CapturedLogs:
    """What the server wrote, as rendered text and as parsed lines."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def named(self, event: str, **match: object) -> list[dict[str, Any]]:
        """The lines of `event` whose fields equal every `match` value."""
        return [
            line for line in self.lines() if line["event"] == event and all(line.get(k) == v for k, v in match.items())
        ]

    def one(self, event: str, **match: object) -> dict[str, Any]:
        found = self.named(event, **match)
        assert len(found) == 1, f"{len(found)} {event} lines match {match}; the log is:\n{self.text}"
        return found[0]


@pytest.fixture
def captured() -> Iterator[CapturedLogs]:
    saved = structlog.get_config()
    buffer = io.StringIO()
    structlog.configure(
        processors=logs.processors("json"),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(buffer),
        cache_logger_on_first_use=False,
    )
    try:
        yield CapturedLogs(buffer)
    finally:
        structlog.configure(**saved)


@pytest.fixture
def clock() -> ManualClock:
    """Manual, starting now: what the server signs must pass its receivers' ±5 minute check."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, api_key=ADMIN_KEY, allow_destinations=LOOPBACK, shutdown_grace=0.5)


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    """The installed plugins (the bundled connectors), the circuit closed however many failures a test makes."""
    running = EventBusServer(
        server_settings,
        clock=clock,
        bus_settings=bus_settings,
        dispatch_settings=DispatchSettings(stop_grace=0.2, health=HealthPolicy(failure_threshold=1000)),
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.2)


@pytest.fixture
async def receivers(server: EventBusServer) -> AsyncIterator[list[Receiver]]:
    """Two loopback receivers (closed before the server stops): the first answers 200, the second 500."""
    started = [Receiver(), Receiver()]
    for receiver in started:
        await receiver.start()
    started[1].default = dataclasses.replace(started[1].default, status=500)
    yield started
    for receiver in started:
        await receiver.close()


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on for this test, into an in-memory exporter (skipped when the SDK is not installed)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        pytest.skip("opentelemetry-sdk is not installed (the `otel` extra): the span tests need its in-memory exporter")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()
