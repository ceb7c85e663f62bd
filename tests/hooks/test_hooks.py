"""`POST /hooks/{source}` end to end: verified by the source's connector before anything is stored, events and the
redacted raw request committed together, redeliveries answered with the first answer, every refusal clear."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from eventbus.bus.sources import SourceInfo, SourceInput
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.client import EventBusClient
from eventbus.http.hooks import HOOKS
from eventbus.runtime import EventBusServer
from tests.hooks.conftest import SECRET, sign


def delivery(name: str = "d-1", *items: dict[str, object]) -> bytes:
    return json.dumps({"delivery": name, "items": list(items) or [{"id": "c-1", "total": 10}]}).encode()


async def post(
    http_url: str, body: bytes, *, secret: str | None = SECRET, path: str = "/hooks/shop", **headers: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    sent = {"Content-Type": "application/json", **headers}
    if secret is not None:
        sent["X-Signature"] = sign(secret, body)
    async with aiohttp.ClientSession() as http, http.post(f"{http_url}{path}", data=body, headers=sent) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else {}, dict(response.headers)


async def stored(server: EventBusServer) -> list[str]:
    events, _ = await server.bus.list_events(page_size=1000, source="/hooks/shop")
    return [e.event.id for e in events]


async def test_a_signed_delivery_becomes_events_a_subscriber_receives(
    server: EventBusServer, source: SourceInfo, http_url: str, client: EventBusClient
) -> None:
    async with client.subscribe(None, ["signed.*"], start="latest") as subscription:
        body = delivery("d-1", {"id": "c-1", "total": 10}, {"id": "c-2", "total": 20})
        status, answer, _ = await post(http_url, body)
        assert status == 202
        assert [(e["id"], e["source"], e["duplicate"]) for e in answer["events"]] == [
            ("d-1.0", "/hooks/shop", False),
            ("d-1.1", "/hooks/shop", False),
        ]
        got = []
        async for item in subscription:
            got.append((item.event.event.type, item.event.event.subject, item.event.event.json_data()))
            await item.ack()
            if len(got) == 2:
                break
    assert got == [
        ("signed.item", "c-1", {"id": "c-1", "total": 10}),
        ("signed.item", "c-2", {"id": "c-2", "total": 20}),
    ]


async def test_a_hook_event_is_sent_on_to_a_webhook_endpoint(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/in"
        await server.services.subscriptions.create(SubscriptionInput(patterns=["signed.*"], options={"url": url}))
        status, answer, _ = await post(http_url, delivery("d-9", {"id": "c-9", "total": 99}))
        assert status == 202
        headers, body = await asyncio.wait_for(received.get(), 5)
        assert headers["webhook-id"] == answer["events"][0]["event_id"]
        assert json.loads(body) == {
            "type": "signed.item",
            "timestamp": json.loads(body)["timestamp"],
            "data": {"id": "c-9", "total": 99},
        }
    finally:
        await runner.cleanup()


async def test_a_redelivery_gets_the_first_answer_and_stores_nothing(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    status, first, _ = await post(http_url, delivery("d-7"))
    again, second, _ = await post(http_url, delivery("d-7"))
    assert (status, again) == (202, 200)
    assert second == first  # the very same body
    assert await stored(server) == ["d-7.0"]


async def test_the_raw_request_is_kept_redacted_with_its_events(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    body = delivery("d-2")
    extra = {"X-Trace": "t-1", "X-Proof": "p-1", "X-Api-Key": "k-1"}
    status, answer, _ = await post(http_url, body, path="/hooks/shop?token=abc&page=2", **extra)
    assert status == 202
    kept = await server.store.find_request(answer["events"][0]["seq"])  # type: ignore[attr-defined]
    assert kept is not None
    assert kept.request.body == body
    headers = dict(kept.request.headers)
    assert headers["X-Signature"] == headers["X-Proof"] == headers["X-Api-Key"] == "[redacted]"
    assert headers["X-Trace"] == "t-1"
    assert dict(kept.request.query) == {"token": "[redacted]", "page": "[redacted]"}  # no query value is kept
    assert SECRET not in repr(kept)


@pytest.mark.parametrize(
    ("secret", "headers", "body", "status", "field"),
    [
        (None, {}, delivery(), 401, "X-Signature"),
        ("wrong-secret", {}, delivery(), 401, "X-Signature"),
        (SECRET, {}, b"{not json", 400, "body"),
    ],
    ids=["unsigned", "wrong-secret", "malformed-json"],
)
async def test_refusals_are_problems_and_store_nothing(
    server: EventBusServer,
    source: SourceInfo,
    http_url: str,
    secret: str | None,
    headers: dict[str, str],
    body: bytes,
    status: int,
    field: str,
) -> None:
    got, problem, response_headers = await post(http_url, body, secret=secret, **headers)
    assert got == status
    assert response_headers["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert SECRET not in json.dumps(problem)
    assert await stored(server) == []


async def test_a_flipped_byte_fails_verification(server: EventBusServer, source: SourceInfo, http_url: str) -> None:
    body = delivery()
    signature = sign(SECRET, body)
    tampered = body.replace(b"10", b"11")
    status, _, _ = await post(http_url, tampered, secret=None, **{"X-Signature": signature})
    assert status == 401
    assert await stored(server) == []


async def test_unknown_and_disabled_sources(server: EventBusServer, source: SourceInfo, http_url: str) -> None:
    status, problem, _ = await post(http_url, delivery(), path="/hooks/nobody")
    assert (status, problem["status"]) == (404, 404)
    await server.services.sources.update("shop", SourceInput(enabled=False))
    status, _, _ = await post(http_url, delivery())
    assert status == 403
    assert await stored(server) == []


async def test_a_rotated_secret_keeps_verifying_during_the_grace(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    rotated = await server.services.sources.rotate_secret("shop")
    [new_secret] = rotated.revealed
    assert (await post(http_url, delivery("d-old"), secret=SECRET))[0] == 202
    assert (await post(http_url, delivery("d-new"), secret=new_secret))[0] == 202


async def test_a_challenge_is_answered_by_the_connector(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    body = json.dumps({"challenge": "xyz"}).encode()
    status, answer, _ = await post(http_url, body)
    assert (status, answer) == (200, {"challenge": "xyz"})
    assert await stored(server) == []


async def test_a_connector_that_raises_is_contained_and_counted(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    status, problem, _ = await post(http_url, json.dumps({"crash": True}).encode())
    assert status == 500 and "logged" in problem["detail"]
    assert sum(server.plugins.failures.values()) == 1
    assert (await post(http_url, delivery()))[0] == 202  # and the server keeps serving


async def test_the_body_limit_is_enforced_while_reading(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    big = b'{"delivery": "x", "items": [], "pad": "' + b"a" * (1024 * 1024) + b'"}'
    assert (await post(http_url, big))[0] == 413

    async def chunks() -> Any:
        for _ in range(20):
            yield b"a" * 65536

    async with aiohttp.ClientSession() as http, http.post(f"{http_url}/hooks/shop", data=chunks()) as response:
        assert response.status == 413
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /hooks/shop HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"a" * 10)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 413 " in status_line  # refused on the declared length, before the body arrives
    assert await stored(server) == []


async def test_the_ingress_rate_limit_answers_429_with_retry_after(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    await server.services.sources.update("shop", SourceInput(rate_limit=1))
    for _ in range(3):  # unsigned junk is refused before it can spend the source's budget
        assert (await post(http_url, delivery("junk"), secret="wrong"))[0] == 401
    assert (await post(http_url, delivery("r-1")))[0] == 202
    status, _, headers = await post(http_url, delivery("r-2"))
    assert status == 429
    assert int(headers["Retry-After"]) >= 1


async def test_a_store_that_cannot_commit_answers_503(
    server: EventBusServer, source: SourceInfo, http_url: str
) -> None:
    await server.store.close()
    status, problem, _ = await post(http_url, delivery())
    assert status == 503 and problem["status"] == 503


async def test_a_stalled_body_is_cut_off_with_408(server: EventBusServer, source: SourceInfo, http_url: str) -> None:
    assert server.http_app is not None
    server.http_app[HOOKS].read_timeout = 0.2
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /hooks/shop HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 408 " in status_line
    assert await stored(server) == []


async def test_publishers_cannot_use_the_reserved_sources(server: EventBusServer, http_url: str) -> None:
    for reserved in ("/hooks/shop", "/eventbus"):
        headers = {"ce-specversion": "1.0", "ce-id": "d-1.0", "ce-source": reserved, "ce-type": "signed.item"}
        async with aiohttp.ClientSession() as http, http.post(f"{http_url}/events", headers=headers) as response:
            assert response.status == 403
            assert [e["field"] for e in (await response.json())["errors"]] == ["events[0].source"]
    assert await stored(server) == []
