"""Hostile receivers: a 10 MB answer, a trickle of bytes, garbage instead of HTTP. Each attempt is recorded with
what it got (never more than 4 KiB of body), and a well-behaved endpoint's deliveries flow meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from eventbus.runtime import EventBusServer
from tests.delivery.helpers import Receiver, create_endpoint, eventually, order, publish, wait_attempts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


async def ten_megabytes(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(status=200, headers={"content-type": "application/octet-stream"})
    response.content_length = 10 * 1024 * 1024
    await response.prepare(request)
    chunk = b"x" * 65536
    try:
        for _ in range(160):
            await response.write(chunk)
    except (ConnectionResetError, RuntimeError):
        pass  # the sender stopped reading at its cap and closed: expected
    return response


async def trickle(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(status=200)
    await response.prepare(request)
    try:
        for _ in range(600):
            await response.write(b".")
            await asyncio.sleep(0.05)
    except (ConnectionResetError, RuntimeError):
        pass
    return response


async def test_a_ten_megabyte_answer_is_cut_at_the_cap(
    server: EventBusServer, hostile: Callable[[Handler], Awaitable[str]]
) -> None:
    endpoint = await create_endpoint(server, await hostile(ten_megabytes))
    [published] = await publish(server, order(1))
    record, [attempt] = await wait_attempts(server, await _first_delivery(server, endpoint.subscription.id), 1)
    assert (record.state, attempt.status_code) == ("succeeded", 200)
    assert len(attempt.response_body) == 4096
    assert published.event_id == record.event_id


async def test_trickling_and_garbage_receivers_do_not_hold_up_a_good_one(
    server: EventBusServer, hostile: Callable[[Handler], Awaitable[str]], receiver: Callable[[], Awaitable[Receiver]]
) -> None:
    garbage = await asyncio.start_server(_garbage, "127.0.0.1", 0)
    port = garbage.sockets[0].getsockname()[1]
    try:
        slow = await create_endpoint(server, await hostile(trickle), options={"timeout": 1})
        broken = await create_endpoint(server, f"http://127.0.0.1:{port}/hook")
        good_hook = await receiver()
        await create_endpoint(server, good_hook)
        await publish(server, *(order(n) for n in range(20)))
        await good_hook.wait_for(20)  # all of them, while the trickling endpoint's ten sends still hang
        _, [slow_attempt] = await wait_attempts(server, await _first_delivery(server, slow.subscription.id), 1)
        assert slow_attempt.error_class == "timeout"
        _, [broken_attempt] = await wait_attempts(server, await _first_delivery(server, broken.subscription.id), 1)
        assert broken_attempt.error_class == "reset"
        assert broken_attempt.status_code is None
    finally:
        garbage.close()
        await garbage.wait_closed()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"this is not HTTP at all\r\n\r\n\x00\xff")
    await writer.drain()
    writer.close()


async def _first_delivery(server: EventBusServer, subscription_id: str) -> str:
    async def first() -> str | None:
        found, _ = await server.services.deliveries.list_page(subscription_id=subscription_id)
        return found[0].delivery_id if found else None

    return await eventually(first, what=f"a delivery for {subscription_id}")
