"""Every HTTP route and every RPC of a running server refuses a caller without a valid key of the right scope,
judged by an open list written here from DESIGN.md §5 (not by the server's own scope tables, which
tests/test_scopes.py checks): a route or RPC added later without auth fails this test.

Credentials tried on each: none, six malformed or forged ones (another scheme, an empty bearer, a known key id with
a wrong secret, a revoked key, non-ASCII), and a real key that lacks the scope (403 / PERMISSION_DENIED). After
the sweep nothing was stored: no event, subscription, source or key came from a refused call."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from eventbus.auth import Scope
from eventbus.runtime import EventBusServer
from tests.test_scopes import call_rpc, concrete, routes_of, served_methods

# DESIGN.md §5: "Open routes: /healthz, /readyz, /hooks/* (the connector authenticates), /openapi.json, the /ui/
# shell ..., gRPC health and reflection." (`/metrics` needs admin unless --metrics-public, which is off here.)
OPEN_ROUTES = re.compile(r"^/(healthz|readyz|openapi\.json|hooks/.+|ui|ui/|ui/[^/]+)$")
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
# The narrowest a route or RPC may be is one scope; a key holding every other scope must still be refused.
OTHERS = {
    Scope.ADMIN: (Scope.PUBLISH, Scope.SUBSCRIBE),
    Scope.PUBLISH: (Scope.SUBSCRIBE,),
    Scope.SUBSCRIBE: (Scope.PUBLISH,),
}
# DESIGN.md §5: the admin surface is all of /v1 but publishing and reading events; the EventBus service is not admin.
PUBLISH_ROUTES = {("POST", "/events"), ("POST", "/v1/events")}


def needed_scope(method: str, path: str) -> Scope:
    if (method, path) in PUBLISH_ROUTES:
        return Scope.PUBLISH
    return Scope.ADMIN


def rpc_scope(path: str) -> Scope | None:
    """The scope an RPC needs by DESIGN.md, where it says; None: some scope, not said which."""
    if path.startswith("/eventbus.v1.Admin/"):
        return Scope.ADMIN
    return {"/eventbus.v1.EventBus/Publish": Scope.PUBLISH, "/eventbus.v1.EventBus/Subscribe": Scope.SUBSCRIBE}.get(
        path
    )


class Credentials:
    """Keys made on the running server: one per combination needed, one revoked, and forgeries."""

    def __init__(self) -> None:
        self.keys: dict[frozenset[Scope], str] = {}
        self.forged: list[str] = []

    def holding(self, scopes: tuple[Scope, ...]) -> str:
        return self.keys[frozenset(scopes)]


@pytest.fixture
async def credentials(server: EventBusServer) -> Credentials:
    made = Credentials()
    for scopes in ((Scope.ADMIN,), (Scope.PUBLISH, Scope.SUBSCRIBE), (Scope.SUBSCRIBE,), (Scope.PUBLISH,)):
        made.keys[frozenset(scopes)] = (await server.services.api_keys.create([s.value for s in scopes])).key
    revoked = await server.services.api_keys.create(["admin"], name="revoked")
    await server.services.api_keys.revoke(revoked.info.key_id)
    admin = made.holding((Scope.ADMIN,))
    key_id = admin.split("_")[1]
    made.forged = [
        f"Basic {admin}",  # the right key under another scheme
        "Bearer",
        "Bearer    ",
        f"Bearer ebk_{key_id}_{'x' * 40}",  # a known key id, a wrong secret
        f"Bearer {revoked.key}",
        f"Bearer {admin[:-1]}é",  # non-ASCII
    ]
    return made


@pytest.fixture
async def channel(server: EventBusServer) -> AsyncIterator[grpc.aio.Channel]:
    assert server.addresses is not None
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as opened:
        yield opened


async def stored_counts(server: EventBusServer) -> tuple[int, ...]:
    services = server.services
    return (
        len((await services.subscriptions.list_page())[0]),
        len((await services.sources.list_page())[0]),
        len(await services.api_keys.list()),
        len((await server.bus.list_events())[0]),
    )


async def test_every_http_route_not_on_the_open_list_refuses(
    server: EventBusServer, credentials: Credentials, http_url: str
) -> None:
    assert server.http_app is not None
    before = await stored_counts(server)
    guarded = [(m, p) for m, p in routes_of(server.http_app) if not OPEN_ROUTES.match(p)]
    assert len(guarded) >= 40, guarded  # the whole /v1 API is there

    async def status(http: aiohttp.ClientSession, method: str, path: str, authorization: str | None) -> int:
        headers = {"Authorization": authorization} if authorization is not None else {}
        body = b'{"url": "https://example.com/x", "name": "x", "scopes": ["admin"]}'
        headers["Content-Type"] = "application/json"
        async with http.request(method, http_url + concrete(path), headers=headers, data=body) as answer:
            text = await answer.read()
            if answer.status in (401, 403):
                assert answer.content_type == "application/problem+json", (method, path, text)
            return answer.status

    async with aiohttp.ClientSession() as http:
        for method, path in guarded:
            assert await status(http, method, path, None) == 401, (method, path)
            for forged in credentials.forged:
                assert await status(http, method, path, forged) == 401, (method, path, forged)
            scope = needed_scope(method, path)
            assert await status(http, method, path, f"Bearer {credentials.holding(OTHERS[scope])}") == 403, (
                method,
                path,
            )
    assert await stored_counts(server) == before


async def test_every_rpc_not_in_an_open_service_refuses(
    server: EventBusServer, credentials: Credentials, channel: grpc.aio.Channel
) -> None:
    before = await stored_counts(server)
    methods = [
        (path, m)
        for path, m in await served_methods(channel)
        if not path.startswith(tuple(f"/{s}/" for s in OPEN_SERVICES))
    ]
    assert len(methods) >= 30, [path for path, _ in methods]
    for path, method in methods:
        assert await call_rpc(channel, path, method, None) == grpc.StatusCode.UNAUTHENTICATED, path
        for forged in credentials.forged:
            code = await _call_with_header(channel, path, method, forged)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (path, forged, code)
        scope = rpc_scope(path)
        if scope is not None:
            under = credentials.holding(OTHERS[scope])
            assert await call_rpc(channel, path, method, under) == grpc.StatusCode.PERMISSION_DENIED, path
    assert await stored_counts(server) == before


async def _call_with_header(
    channel: grpc.aio.Channel, path: str, method: MethodDescriptor, authorization: str
) -> grpc.StatusCode:
    """An empty request with this exact `authorization` value (`call_rpc` only sends `Bearer <key>`)."""
    if not authorization.isascii():
        return grpc.StatusCode.UNAUTHENTICATED  # gRPC metadata is ASCII: no client can even send it
    metadata = (("authorization", authorization),)
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path)(b"", metadata=metadata, timeout=10)
            return grpc.StatusCode.OK
        call = channel.stream_stream(path)(metadata=metadata, timeout=10)
        try:
            await call.write(b"")
            await call.done_writing()
        except Exception:
            pass  # refused before reading: the status says why
        answer = await call.read()
        call.cancel()
        return grpc.StatusCode.OK if answer is not grpc.aio.EOF else await call.code()
    except grpc.aio.AioRpcError as error:
        return error.code()
