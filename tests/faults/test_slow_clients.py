"""Slow HTTP clients cannot exhaust the server: headers that trickle and bodies that stop are cut off at their
deadlines, and connections beyond the cap are refused while a normal client keeps being answered. Raw sockets
play the slow clients against a real in-process server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.runtime import EventBusServer
from tests.conftest import fast_settings, store_url

WAIT = 20.0  # seconds within which a deadline of 1 s must have been enforced, even on a busy machine


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **limits: float) -> AsyncIterator[str]:
    """An in-process server with these HTTP limits; yields its `host:port`."""
    settings = ServerSettings(
        store_url=store_url(tmp_path),
        grpc_listen=ListenAddress("127.0.0.1", 0),
        http_listen=ListenAddress("127.0.0.1", 0),
        shutdown_grace=1.0,
        **limits,  # type: ignore[arg-type]
    )
    server = EventBusServer(settings, clock=ManualClock(), bus_settings=fast_settings())
    await server.start()
    try:
        assert server.addresses is not None
        yield str(server.addresses.http)
    finally:
        await server.stop(grace=0.5)


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def until_closed(reader: asyncio.StreamReader, what: str) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WAIT)."""
    try:
        async with asyncio.timeout(WAIT):
            return await reader.read()
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {WAIT:g} s: {what}") from None


async def test_a_client_trickling_its_headers_is_cut_off_at_the_header_deadline(tmp_path: Path) -> None:
    async with serving(tmp_path, http_header_timeout=1.0) as address:
        reader, writer = await connect(address)

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for n in range(10 * int(WAIT)):  # one header line every 100 ms: never the blank line that ends them
                writer.write(f"X-Slow-{n}: y\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.1)  # the slow client's pace

        trickling = asyncio.create_task(trickle())
        try:
            answer = await until_closed(reader, "headers trickled past the deadline")
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:200]
        assert b"application/problem+json" in answer

        # On a keep-alive connection the deadline starts again with the next request's first byte.
        reader, writer = await connect(address)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(WAIT):
            first = await reader.readuntil(b'{"status": "ok"}')
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # ... and the rest never comes
        answer = await until_closed(reader, "the second request's headers never ended")
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_client_that_stops_sending_its_body_is_cut_off_at_the_idle_deadline(tmp_path: Path) -> None:
    async with serving(tmp_path, http_body_idle_timeout=1.0) as address:
        reader, writer = await connect(address)
        writer.write(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n"
            b"Content-Length: 1000\r\n\r\n"
            b'{"specversion": "1.0", '  # ... and nothing more of the promised 1000 bytes
        )
        await writer.drain()
        answer = await until_closed(reader, "a body that stopped mid-way")
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"no request body received" in answer

        # A body that keeps coming, however slowly, is not cut off: each chunk restarts the idle deadline.
        async with aiohttp.ClientSession() as http:

            async def slow_body() -> AsyncIterator[bytes]:
                event = b'{"specversion": "1.0", "id": "slow", "source": "/slow", "type": "slow.body", "data": {}}'
                for index in range(0, len(event), 30):
                    yield event[index : index + 30]
                    await asyncio.sleep(0.4)  # the slow client's pace: under the 1 s deadline each time

            async with http.post(
                f"http://{address}/events",
                data=slow_body(),
                headers={"Content-Type": "application/cloudevents+json"},
            ) as response:
                assert response.status == 202, await response.text()


async def test_connections_beyond_the_cap_are_refused_while_a_normal_client_is_answered(tmp_path: Path) -> None:
    async with serving(tmp_path, http_max_connections=4, http_header_timeout=60.0) as address:
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, opened before the flood
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(f"http://{address}/healthz") as response:
                assert response.status == 200
            idle = [await connect(address) for _ in range(3)]  # with the normal client's: the cap of 4
            for _, writer in idle:
                writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
            try:
                reader, writer = await connect(address)
                refused = await until_closed(reader, "a connection beyond the cap")
                writer.close()
                assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused[:200]
                assert b"Retry-After: " in refused and b"too many connections" in refused
                for _ in range(3):  # the established client is still answered
                    async with http.get(f"http://{address}/healthz") as response:
                        assert response.status == 200
            finally:
                for _, writer in idle:
                    writer.close()
        # Room again once the slow ones are gone (the server learns of each close asynchronously: bounded retry).
        async with asyncio.timeout(WAIT):
            while True:
                reader, writer = await connect(address)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await until_closed(reader, "a normal request after the flood")
                writer.close()
                if answer.startswith(b"HTTP/1.1 200 "):
                    break
                assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
