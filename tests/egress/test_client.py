"""The egress client against real aiohttp receivers on loopback: the connect-time guard, limits and failures."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import aiohttp
import pytest
from aiohttp import web

from eventbus.egress.client import (
    DestinationRefusedError,
    EgressClient,
    EgressError,
    EgressResponse,
    parse_retry_after,
)
from eventbus.egress.ssrf import DestinationPolicy

LOOPBACK_ONLY = DestinationPolicy(allow=[ip_network("127.0.0.1/32")])
BIG = 10 * 1024 * 1024


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1:0 that records every request it gets."""

    port: int
    hits: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _transport(request: web.Request) -> asyncio.Transport:
    transport = request.transport
    assert isinstance(transport, asyncio.Transport)
    return transport


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    release = asyncio.Event()
    state = Receiver(port=0)

    async def record(request: web.Request) -> None:
        state.hits.append((request.path, dict(request.headers), await request.read()))

    async def ok(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=201, text="accepted", headers={"X-Receiver": "yes", "X-Long": "v" * 5000})

    async def many_headers(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers={f"X-H{i}": str(i) for i in range(80)})

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=302, headers={"Location": "/target"})

    async def target(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(text="should never be reached")

    async def hang(request: web.Request) -> web.StreamResponse:
        await record(request)
        await release.wait()
        return web.Response()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x")
            await asyncio.sleep(0.1)
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(BIG)})
        await response.prepare(request)
        chunk = b"y" * 65536
        try:
            for _ in range(BIG // len(chunk)):
                await response.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client hung up after its cap, as it should
        return response

    async def reset(request: web.Request) -> web.StreamResponse:
        await record(request)
        # SO_LINGER 0 makes close() send a RST instead of a FIN.
        transport = _transport(request)
        sock: socket.socket = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await release.wait()
        return web.Response()

    async def garbage(request: web.Request) -> web.StreamResponse:
        transport = _transport(request)
        transport.write(b"NOT HTTP AT ALL\r\n\r\n")
        transport.close()
        await release.wait()
        return web.Response()

    async def retry_after(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, headers={"Retry-After": "120"})

    app = web.Application()
    for path, handler in [
        ("/ok", ok),
        ("/many-headers", many_headers),
        ("/redirect", redirect),
        ("/target", target),
        ("/hang", hang),
        ("/trickle", trickle),
        ("/big", big),
        ("/reset", reset),
        ("/garbage", garbage),
        ("/retry", retry_after),
    ]:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        release.set()
        await runner.cleanup()


async def _client(policy: DestinationPolicy = LOOPBACK_ONLY) -> EgressClient:
    client = EgressClient(policy, user_agent="eventbus/test")
    await client.start()
    return client


@pytest.fixture
async def client() -> AsyncIterator[EgressClient]:
    egress = await _client()
    try:
        yield egress
    finally:
        await egress.close()


async def _fails(client: EgressClient, url: str, deadline: float = 2.0) -> EgressError:
    with pytest.raises(EgressError) as info:
        await client.post(url, b"{}", {"content-type": "application/json"}, timeout=deadline)
    return info.value


# --- connect-time SSRF guard -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "127.1", "[::ffff:127.0.0.1]"])
async def test_guard_refuses_loopback_without_allowlist(receiver: Receiver, host: str) -> None:
    egress = await _client(DestinationPolicy())
    try:
        error = await _fails(egress, receiver.url("/ok", host=host))
    finally:
        await egress.close()
    assert error.error_class == "ssrf", error.message
    assert "loopback" in error.message
    assert receiver.hits == []


async def test_guard_admits_allowlisted_loopback(receiver: Receiver, client: EgressClient) -> None:
    for host in ("localhost", "127.0.0.1"):
        response = await client.post(receiver.url("/ok", host=host), b"{}", {}, timeout=2)
        assert response.status == 201
    assert len(receiver.hits) == 2


async def test_plugin_session_is_guarded_too(receiver: Receiver) -> None:
    egress = await _client(DestinationPolicy())
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await egress.session.get(receiver.url("/ok"))
    finally:
        await egress.close()
    assert isinstance(info.value.os_error, DestinationRefusedError)
    assert EgressError.from_exception(info.value, duration=0).error_class == "ssrf"
    assert receiver.hits == []


# --- behaviour against real receivers --------------------------------------------------------------------------


async def test_success_captures_status_headers_body(receiver: Receiver, client: EgressClient) -> None:
    body = b'{"type":"user.created"}'
    response = await client.post(
        receiver.url("/ok?token=secret"), body, {"content-type": "application/json", "webhook-id": "msg_1"}, timeout=2
    )
    assert isinstance(response, EgressResponse)
    assert response.status == 201
    assert response.body == b"accepted"
    assert not response.truncated
    assert 0 < response.duration < 2
    headers = dict(response.headers)
    assert headers["X-Receiver"] == "yes"
    assert len(headers["X-Long"]) == 1024
    [(path, sent_headers, sent_body)] = receiver.hits
    assert path == "/ok"
    assert sent_body == body
    assert sent_headers["webhook-id"] == "msg_1"
    assert sent_headers["User-Agent"] == "eventbus/test"
    assert sent_headers["Content-Type"] == "application/json"


async def test_headers_capped_at_50(receiver: Receiver, client: EgressClient) -> None:
    response = await client.post(receiver.url("/many-headers"), b"", {}, timeout=2)
    assert len(response.headers) == 50


async def test_redirect_not_followed(receiver: Receiver, client: EgressClient) -> None:
    response = await client.post(receiver.url("/redirect"), b"{}", {}, timeout=2)
    assert response.status == 302
    assert dict(response.headers)["Location"] == "/target"
    assert [hit[0] for hit in receiver.hits] == ["/redirect"]


async def test_hanging_receiver_times_out(receiver: Receiver, client: EgressClient) -> None:
    started = time.monotonic()
    error = await _fails(client, receiver.url("/hang"), deadline=0.3)
    elapsed = time.monotonic() - started
    assert error.error_class == "timeout"
    assert 0.25 <= error.duration <= 0.8
    assert elapsed < 0.8


async def test_trickling_receiver_times_out(receiver: Receiver, client: EgressClient) -> None:
    error = await _fails(client, receiver.url("/trickle"), deadline=0.3)
    assert error.error_class == "timeout"
    assert error.duration < 0.8


async def test_huge_body_read_up_to_cap_only(receiver: Receiver, client: EgressClient) -> None:
    started = time.monotonic()
    response = await client.post(receiver.url("/big"), b"", {}, timeout=5)
    assert time.monotonic() - started < 1
    assert response.status == 200
    assert response.body == b"y" * 4096
    assert response.truncated


async def test_reset_connection(receiver: Receiver, client: EgressClient) -> None:
    error = await _fails(client, receiver.url("/reset"))
    assert error.error_class == "reset", error.message


async def test_malformed_response_is_reset(receiver: Receiver, client: EgressClient) -> None:
    error = await _fails(client, receiver.url("/garbage"))
    assert error.error_class == "reset", error.message
    assert "\n" not in error.message


async def test_nothing_listening_is_connect(client: EgressClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _fails(client, f"http://127.0.0.1:{port}/")
    assert error.error_class == "connect"
    assert f"127.0.0.1:{port}" in error.message


async def test_unresolvable_name_is_dns(client: EgressClient) -> None:
    error = await _fails(client, "http://no-such-host.invalid/hook?token=secret")
    assert error.error_class == "dns"
    assert "token" not in error.message


async def test_retry_after_header_is_kept(receiver: Receiver, client: EgressClient) -> None:
    response = await client.post(receiver.url("/retry"), b"", {}, timeout=2)
    assert response.status == 503
    now = datetime.now(UTC)
    assert parse_retry_after(dict(response.headers).get("Retry-After"), now) == timedelta(seconds=120)


async def test_session_requires_start() -> None:
    egress = EgressClient(LOOPBACK_ONLY, user_agent="eventbus/test")
    with pytest.raises(RuntimeError, match="start"):
        _ = egress.session
    await egress.close()


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Thu, 01 Jan 2026 12:01:30 GMT", timedelta(seconds=90)),
        ("Thursday, 01-Jan-26 12:00:10 GMT", timedelta(seconds=10)),
        ("Thu Jan  1 12:00:05 2026", timedelta(seconds=5)),
        ("99999999999999999999999", timedelta(days=30)),
        ("Sat, 01 Jan 2028 00:00:00 GMT", timedelta(days=30)),
        ("Wed, 31 Dec 2025 12:00:00 GMT", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected
