"""The scope tables cover every HTTP route and every RPC the server serves, and the server enforces them: no key is
401/UNAUTHENTICATED, a key without the scope 403/PERMISSION_DENIED, the right key gets past auth."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventbus.auth import OPEN, Access, Scope
from eventbus.grpc.scopes import RPC_ACCESS
from eventbus.http.app import make_app
from eventbus.http.auth import declared_access
from eventbus.runtime import EventBusServer

AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# For each scope, a key that holds another scope only.
UNDER_SCOPED = {Scope.ADMIN: Scope.PUBLISH, Scope.PUBLISH: Scope.SUBSCRIBE, Scope.SUBSCRIBE: Scope.PUBLISH}


@dataclass
class Keys:
    by_scope: dict[Scope, str]

    def header(self, scope: Scope | None) -> str | None:
        return f"Bearer {self.by_scope[scope]}" if scope is not None else None


@pytest.fixture
async def keys(server: EventBusServer) -> Keys:
    """One stored key per scope (the admin one first: the first key must be able to manage keys)."""
    by_scope = {}
    for scope in (Scope.ADMIN, Scope.PUBLISH, Scope.SUBSCRIBE):
        by_scope[scope] = (await server.services.api_keys.create([scope.value], name=f"{scope}-only")).key
    assert not server.keys.open
    return Keys(by_scope)


@pytest.fixture
async def channel(server: EventBusServer) -> AsyncIterator[grpc.aio.Channel]:
    assert server.addresses is not None
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as opened:
        yield opened


# -- every route and RPC is in a table --------------------------------------------------------------------------


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(method, canonical path) of every route; HEAD is GET's twin."""
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.resource and r.method != "HEAD"})


def missing_routes(app: web.Application) -> list[str]:
    return [f"{method} {path}" for method, path in routes_of(app) if declared_access(method, path) is None]


async def served_methods(channel: grpc.aio.Channel) -> list[tuple[str, MethodDescriptor]]:
    """Every RPC of every service the server registers, asked of its reflection service."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    call.cancel()
    pool = descriptor_pool.Default()
    found: list[tuple[str, MethodDescriptor]] = []
    for service in response.list_services_response.service:
        descriptor = pool.FindServiceByName(service.name)
        found.extend((f"/{descriptor.full_name}/{m.name}", m) for m in descriptor.methods)
    return sorted(found, key=lambda pair: pair[0])


def app_of(server: EventBusServer) -> web.Application:
    return make_app(server.bus, server.keys, lambda: True)


async def test_every_http_route_is_in_the_table(server: EventBusServer) -> None:
    app = server.http_app  # the running application: every route any feature added
    assert app is not None
    assert ("POST", "/hooks/{source}") in routes_of(app)
    assert missing_routes(app) == []


async def test_a_route_without_an_entry_is_caught(server: EventBusServer) -> None:
    async def forgotten(request: web.Request) -> web.Response:
        return web.Response()

    app = app_of(server)
    app.router.add_get("/v1/forgotten/{id}", forgotten)
    assert missing_routes(app) == ["GET /v1/forgotten/{id}"]


async def test_every_rpc_is_in_the_table(channel: grpc.aio.Channel) -> None:
    served = [path for path, _ in await served_methods(channel)]
    for expected in ("/eventbus.v1.EventBus/Publish", "/eventbus.v1.Admin/CreateKey", "/grpc.health.v1.Health/Check"):
        assert expected in served
    assert [path for path in served if path not in RPC_ACCESS] == []
    assert [path for path in RPC_ACCESS if path not in served] == []  # no stale entries either


# -- the server enforces the tables -----------------------------------------------------------------------------


async def call_rpc(channel: grpc.aio.Channel, path: str, method: MethodDescriptor, key: str | None) -> grpc.StatusCode:
    """Call with an empty request (and, for a stream, one empty message); the status, or OK if it answered."""
    request_class = message_factory.GetMessageClass(method.input_type)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    options = {"request_serializer": request_class.SerializeToString, "response_deserializer": bytes}
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path, **options)(request_class(), metadata=metadata, timeout=10)
            return grpc.StatusCode.OK
        if not method.client_streaming:
            stream = channel.unary_stream(path, **options)(request_class(), metadata=metadata, timeout=10)
        else:
            stream = channel.stream_stream(path, **options)(metadata=metadata, timeout=10)
            try:
                await stream.write(request_class())
            except Exception:
                pass  # refused before reading (the stream may be finished already): the status below says why
        try:
            answer = await stream.read()
        finally:
            stream.cancel()
        if answer is not grpc.aio.EOF:
            return grpc.StatusCode.OK
        return await stream.code()
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_every_rpc_enforces_its_scope(channel: grpc.aio.Channel, keys: Keys) -> None:
    checked: dict[Access, int] = {}
    for path, method in await served_methods(channel):
        access = RPC_ACCESS[path]
        checked[access] = checked.get(access, 0) + 1
        if access == OPEN:
            assert await call_rpc(channel, path, method, None) not in AUTH_CODES, path
            continue
        scope = Scope(access)
        assert await call_rpc(channel, path, method, None) == grpc.StatusCode.UNAUTHENTICATED, path
        assert await call_rpc(channel, path, method, "ebk_0_wrong") == grpc.StatusCode.UNAUTHENTICATED, path
        under = keys.by_scope[UNDER_SCOPED[scope]]
        assert await call_rpc(channel, path, method, under) == grpc.StatusCode.PERMISSION_DENIED, path
        assert await call_rpc(channel, path, method, keys.by_scope[scope]) not in AUTH_CODES, path
        assert await call_rpc(channel, path, method, keys.by_scope[Scope.ADMIN]) not in AUTH_CODES, path
    assert set(checked) == {OPEN, Scope.PUBLISH, Scope.SUBSCRIBE, Scope.ADMIN}


def concrete(path: str) -> str:
    """`/hooks/{source}` → `/hooks/test`."""
    return re.sub(r"\{[^}]+\}", "test", path)


async def test_every_http_route_enforces_its_scope(server: EventBusServer, keys: Keys, http_url: str) -> None:
    async def status(method: str, path: str, authorization: str | None) -> tuple[int, aiohttp.ClientResponse]:
        headers = {"Authorization": authorization} if authorization else {}
        async with http.request(method, http_url + concrete(path), headers=headers, data=b"") as response:
            await response.read()
            return response.status, response

    assert server.http_app is not None
    async with aiohttp.ClientSession() as http:
        for method, path in routes_of(server.http_app):
            access = declared_access(method, path)
            assert access is not None, (method, path)
            if access == OPEN:
                code, _ = await status(method, path, None)
                assert code not in (401, 403), (method, path)
                continue
            scope = Scope(access)
            code, response = await status(method, path, None)
            assert code == 401, (method, path)
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            code, response = await status(method, path, keys.header(UNDER_SCOPED[scope]))
            assert code == 403, (method, path)
            assert response.content_type == "application/problem+json"
            code, _ = await status(method, path, keys.header(scope))
            assert code not in (401, 403), (method, path)
            code, _ = await status(method, path, keys.header(Scope.ADMIN))
            assert code not in (401, 403), (method, path)


async def test_an_unknown_route_is_404_without_a_key(keys: Keys, http_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{http_url}/nowhere") as response:
        assert response.status == 404
