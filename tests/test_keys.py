"""API keys through the client and the real server: shown once, stored as a SHA-256, scoped, revoked at once."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from eventbus.grpc.errors import field_violations
from eventbus.ids import is_id
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from eventbus.store import sqlite_path
from eventbus.v1 import admin_pb2, admin_pb2_grpc

CONFIGURED_KEY = "ebk_configured_secretsecretsecret"


def event(id: str) -> Event:
    return Event.create(type="order.paid", source="/shop", id=id, data={"total": 1})


@asynccontextmanager
async def connect(server: EventBusServer, key: str | None) -> AsyncIterator[EventBusClient]:
    assert server.addresses is not None
    async with EventBusClient(str(server.addresses.grpc), api_key=key, timeout=10, publish_retries=0) as client:
        yield client


async def test_create_shows_the_key_once_and_list_never(server: EventBusServer, client: EventBusClient) -> None:
    created = await client.create_key(["admin"], name="ops laptop")
    prefix, ulid, secret = created.key.split("_", 2)
    assert prefix == "ebk" and created.status.id == f"key_{ulid}" and is_id(created.status.id, "key")
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) == 32 and "=" not in secret
    assert created.status.scopes == ("admin",) and created.status.name == "ops laptop"
    assert created.status.revoked_at is None and created.status.last_used_at is None

    # The server is no longer open: the key is needed from now on.
    with pytest.raises(UnauthenticatedError):
        await client.list_keys()
    async with connect(server, created.key) as admin:
        keys, token = await admin.list_keys()
        assert [k.id for k in keys] == [created.status.id] and token == ""
        assert not hasattr(keys[0], "key")
        # Nothing on the wire of a list names the key or its digest.
        assert server.addresses is not None
        async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as channel:
            raw = await admin_pb2_grpc.AdminStub(channel).ListKeys(
                admin_pb2.ListKeysRequest(), metadata=(("authorization", f"Bearer {created.key}"),)
            )
        wire = raw.SerializeToString()
        assert secret.encode() not in wire and hashlib.sha256(created.key.encode()).hexdigest().encode() not in wire


async def test_the_store_keeps_only_the_sha256(server: EventBusServer, client: EventBusClient) -> None:
    created = await client.create_key(["publish", "admin"])
    secret = created.key.split("_", 2)[2]
    path = sqlite_path(server.settings.store_url)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key_id, digest, scopes FROM api_keys").fetchall()
    assert rows == [(created.status.id, "sha256:" + hashlib.sha256(created.key.encode()).hexdigest(), "publish,admin")]
    for file in (path, Path(f"{path}-wal")):
        if file.exists():
            assert secret.encode() not in file.read_bytes()


async def test_a_revoked_key_is_refused_at_once(
    server: EventBusServer, client: EventBusClient, http_url: str, clock: ManualClock
) -> None:
    admin_key = (await client.create_key(["admin"])).key
    async with connect(server, admin_key) as admin:
        publisher = await admin.create_key(["publish"], name="shop")
        async with connect(server, publisher.key) as shop:
            await shop.publish(event("before"))
            revoked = await admin.revoke_key(publisher.status.id)
            assert revoked.revoked_at == clock.now()
            with pytest.raises(UnauthenticatedError):
                await shop.publish(event("after"))
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {publisher.key}", "Content-Type": "application/cloudevents+json"}
            body = b'{"specversion": "1.0", "id": "x", "source": "/s", "type": "a.b"}'
            async with http.post(f"{http_url}/events", data=body, headers=headers) as response:
                assert response.status == 401
                assert response.content_type == "application/problem+json"
        # A second revoke changes nothing; the list hides revoked keys unless asked.
        clock.advance(timedelta(hours=1))
        again = await admin.revoke_key(publisher.status.id)
        assert again.revoked_at == revoked.revoked_at
        assert [k.id for k in (await admin.list_keys())[0]] == [admin_key_id(admin_key)]
        everything, _ = await admin.list_keys(include_revoked=True)
        assert [(k.id, k.revoked_at is not None) for k in everything] == [
            (admin_key_id(admin_key), False),
            (publisher.status.id, True),
        ]
        with pytest.raises(NotFoundError):
            await admin.revoke_key("key_01JAAAAAAAAAAAAAAAAAAAAAAA")
        with pytest.raises(InvalidArgumentError):
            await admin.revoke_key("")


def admin_key_id(key: str) -> str:
    return "key_" + key.split("_", 2)[1]


async def test_unknown_and_missing_scopes_are_refused(server: EventBusServer, client: EventBusClient) -> None:
    for scopes in (["root"], ["publish", "everything"], []):
        with pytest.raises(InvalidArgumentError) as caught:
            await client.create_key(scopes)
        assert [v.field for v in caught.value.violations] == ["scopes"]
    assert server.keys.open  # nothing was created
    assert server.addresses is not None
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin_pb2_grpc.AdminStub(channel).CreateKey(admin_pb2.CreateKeyRequest(scopes=["Root"]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in field_violations(refused.value)] == ["scopes"]
    assert "publish, subscribe, admin" in (refused.value.details() or "")


async def test_admin_implies_every_scope(server: EventBusServer, client: EventBusClient) -> None:
    admin_key = (await client.create_key(["admin"])).key
    async with connect(server, admin_key) as admin:
        async with admin.subscribe("audit", ["order.*"], start="earliest") as subscription:
            [published] = await admin.publish(event("a1"))
            delivery = await anext(subscription)
            assert delivery.event.event_id == published.event_id
            await delivery.ack()
        assert (await admin.get_event(published.event_id)).event.id == "a1"
        await admin.create_key(["subscribe"])


async def test_each_scope_allows_only_its_calls(server: EventBusServer, client: EventBusClient) -> None:
    admin_key = (await client.create_key(["admin"])).key
    async with connect(server, admin_key) as admin:
        publish_key = (await admin.create_key(["publish"])).key
        subscribe_key = (await admin.create_key(["subscribe"])).key
    async with connect(server, publish_key) as publisher:
        [published] = await publisher.publish(event("p1"))
        with pytest.raises(PermissionDeniedError, match="subscribe"):
            await publisher.get_event(published.event_id)
        with pytest.raises(PermissionDeniedError, match="admin"):
            await publisher.create_key(["admin"])
    async with connect(server, subscribe_key) as reader:
        assert (await reader.get_event(published.event_id)).event.id == "p1"
        with pytest.raises(PermissionDeniedError, match="publish"):
            await reader.publish(event("p2"))
        with pytest.raises(PermissionDeniedError):
            await reader.list_keys()


async def test_the_first_key_must_be_admin_and_the_last_admin_stays(
    server: EventBusServer, client: EventBusClient
) -> None:
    with pytest.raises(FailedPreconditionError, match="admin"):
        await client.create_key(["publish", "subscribe"])
    assert server.keys.open
    first = await client.create_key(["admin"])
    async with connect(server, first.key) as admin:
        with pytest.raises(FailedPreconditionError, match="last admin key"):
            await admin.revoke_key(first.status.id)
        second = await admin.create_key(["admin", "publish"])
        await admin.revoke_key(first.status.id)
    async with connect(server, second.key) as admin:
        with pytest.raises(FailedPreconditionError):
            await admin.revoke_key(second.status.id)
        assert [k.id for k in (await admin.list_keys())[0]] == [second.status.id]


async def test_last_used_is_recorded_coarsely(
    server: EventBusServer, client: EventBusClient, clock: ManualClock
) -> None:
    admin_key = (await client.create_key(["admin"])).key
    async with connect(server, admin_key) as admin:
        publisher = await admin.create_key(["publish"])
        idle = await admin.create_key(["subscribe"])
        clock.advance(timedelta(minutes=5))
        async with connect(server, publisher.key) as shop:
            await shop.publish(event("u1"))
        used = {k.id: k.last_used_at for k in (await admin.list_keys())[0]}
    assert used[publisher.status.id] == clock.now()
    assert used[idle.status.id] is None
    assert used[admin_key_id(admin_key)] == clock.now()


async def test_paging(server: EventBusServer, client: EventBusClient) -> None:
    admin_key = (await client.create_key(["admin"])).key
    async with connect(server, admin_key) as admin:
        made = [admin_key_id(admin_key)] + [(await admin.create_key(["publish"])).status.id for _ in range(2)]
        seen: list[str] = []
        token = ""
        while True:
            page, token = await admin.list_keys(page_size=2, page_token=token)
            seen.extend(k.id for k in page)
            if not token:
                break
        assert seen == made
        with pytest.raises(InvalidArgumentError) as caught:
            await admin.list_keys(page_token="nonsense")
        assert caught.value.violations[0].field == "page_token"


class TestConfiguredKey:
    @pytest.fixture
    def server_settings(self, server_settings: ServerSettings) -> ServerSettings:
        return dataclasses.replace(server_settings, api_key=CONFIGURED_KEY)

    async def test_the_api_key_still_works_beside_stored_keys(self, server: EventBusServer) -> None:
        async with connect(server, CONFIGURED_KEY) as operator:
            # The configured key has admin, so a first stored key without admin is fine here.
            publisher = await operator.create_key(["publish"])
            [published] = await operator.publish(event("c1"))
            assert (await operator.get_event(published.event_id)).event.id == "c1"
            with pytest.raises(NotFoundError):
                await operator.revoke_key("key_configured")  # not a stored key: only a restart removes it
            await operator.revoke_key(publisher.status.id)
            assert (await operator.list_keys())[0] == []
        async with connect(server, publisher.key) as shop:
            with pytest.raises(UnauthenticatedError):
                await shop.publish(event("c2"))


def settings_for(tmp_path: Path, host: str) -> ServerSettings:
    return ServerSettings(
        store_url=f"sqlite:///{tmp_path / 'keys.db'}",
        grpc_listen=ListenAddress(host, 0),
        http_listen=ListenAddress(host, 0),
        shutdown_grace=0.5,
    )


async def test_stored_keys_survive_a_restart_and_allow_listening_beyond_loopback(tmp_path: Path) -> None:
    exposed = settings_for(tmp_path, "0.0.0.0")
    refused = EventBusServer(exposed, clock=ManualClock())
    with pytest.raises(InvalidArgumentError, match="no API key exists"):
        await refused.start()
    await refused.stop(0)

    loopback = EventBusServer(settings_for(tmp_path, "127.0.0.1"), clock=ManualClock())
    await loopback.start()
    try:
        async with connect(loopback, None) as bootstrap:
            created = await bootstrap.create_key(["admin"])
            async with connect(loopback, created.key) as admin:
                revoked = await admin.create_key(["publish"])
                await admin.revoke_key(revoked.status.id)
    finally:
        await loopback.stop(0)

    # A stored key satisfies the key half of the exposure rule; --insecure waives the TLS half (tests/tls/).
    restarted = EventBusServer(dataclasses.replace(exposed, insecure=True), clock=ManualClock())
    await restarted.start()
    try:
        assert restarted.addresses is not None
        address = f"127.0.0.1:{restarted.addresses.grpc.port}"
        async with EventBusClient(address, api_key=created.key, timeout=10) as admin:
            assert [k.id for k in (await admin.list_keys())[0]] == [created.status.id]
        async with EventBusClient(address, api_key=revoked.key, timeout=10, publish_retries=0) as shop:
            with pytest.raises(UnauthenticatedError):
                await shop.publish(event("r1"))
        async with EventBusClient(address, timeout=10) as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.list_keys()
    finally:
        await restarted.stop(0)
