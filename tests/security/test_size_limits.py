"""Request size limits: an oversized header or request line is refused (431 or 400) before any handler runs, a body
over its route's limit is a 413 problem (declared or streamed), and nothing of a refused request is stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret
from tests.rest.helpers import ADMIN_KEY

MiB = 1024 * 1024
EVENTS_LIMIT = 16 * MiB  # DESIGN.md §5
HOOKS_LIMIT = 1 * MiB
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def raw_exchange(server: EventBusServer, request: bytes) -> bytes:
    """Send bytes as they are (no client library trimming anything) and read the answer's head."""
    assert server.addresses is not None
    reader, writer = await asyncio.open_connection(server.addresses.http.host, server.addresses.http.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read(4096)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:200]
    return int(answer.split(b" ", 2)[1])


async def nothing_stored(server: EventBusServer) -> None:
    assert (await server.bus.list_events())[0] == []


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_an_oversized_header_is_refused_before_any_handler(server: EventBusServer) -> None:
    for request in (
        b"POST /events HTTP/1.1\r\nHost: x\r\nce-id: " + b"a" * 10_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /v1/keys?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    ):
        assert status_of(await raw_exchange(server, request)) in (400, 413, 414, 431), request[:60]
    await nothing_stored(server)


async def test_a_declared_body_over_the_limit_is_413_without_reading_it(server: EventBusServer) -> None:
    head = (
        b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
        b"Content-Type: application/cloudevents+json\r\nContent-Length: %d\r\n\r\n" % (EVENTS_LIMIT + 1)
    )
    answer = await raw_exchange(server, head + b"{")  # the rest of the body is never sent
    assert status_of(answer) == 413
    assert b"application/problem+json" in answer
    await nothing_stored(server)


async def test_a_streamed_body_over_the_limit_is_413(server: EventBusServer, http: aiohttp.ClientSession) -> None:
    assert server.addresses is not None

    async def chunks() -> AsyncIterator[bytes]:
        chunk = b" " * MiB
        for _ in range(EVENTS_LIMIT // MiB + 2):
            yield chunk

    headers = {**AUTH, "Content-Type": "application/cloudevents+json"}
    try:
        async with http.post(f"http://{server.addresses.http}/events", data=chunks(), headers=headers) as answer:
            assert answer.status == 413
            assert answer.content_type == "application/problem+json"
            assert (await answer.json())["errors"][0]["field"] == "body"
    except aiohttp.ClientOSError:
        pass  # the server answered and closed while the client was still sending: refused all the same
    await nothing_stored(server)


async def test_a_webhook_body_over_the_hooks_limit_is_413(server: EventBusServer, http: aiohttp.ClientSession) -> None:
    assert server.addresses is not None
    base = f"http://{server.addresses.http}"
    source = {"name": "sw", "connector": "standardwebhooks", "secrets": [generate_secret()]}
    async with http.post(f"{base}/v1/sources", json=source, headers=AUTH) as created:
        assert created.status == 201, await created.text()
    body = json.dumps({"pad": "x" * HOOKS_LIMIT}).encode()
    async with http.post(f"{base}/hooks/sw", data=body, headers={"Content-Type": "application/json"}) as answer:
        assert answer.status == 413, await answer.text()
        assert answer.content_type == "application/problem+json"
    await nothing_stored(server)


async def test_a_rest_body_over_the_limit_is_413(server: EventBusServer, http: aiohttp.ClientSession) -> None:
    assert server.addresses is not None
    body = b'{"url": "https://example.com/", "pad": "' + b"x" * (16 * MiB) + b'"}'
    headers = {**AUTH, "Content-Type": "application/json"}
    async with http.post(f"http://{server.addresses.http}/v1/endpoints", data=body, headers=headers) as answer:
        assert answer.status == 413, await answer.text()
        assert answer.content_type == "application/problem+json"
    assert (await server.services.subscriptions.list_page())[0] == []
