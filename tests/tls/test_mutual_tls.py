"""Mutual TLS (`--tls-client-ca`) on both servers: a client certificate signed by that CA is required; none, or one
from another CA, is refused; the server keeps serving good clients after refusing bad ones."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from eventbus.client import ClientTls, EventBusClient
from eventbus.config import ServerSettings
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from tests.tls.conftest import Pki


@pytest.fixture
def server_settings(server_settings: ServerSettings, pki: Pki) -> ServerSettings:
    return dataclasses.replace(
        server_settings,
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
    )


def _client_tls(pki: Pki, client: str | None) -> ClientTls:
    if client == "good":
        return ClientTls.from_files(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    if client == "stranger":
        return ClientTls.from_files(str(pki.ca), str(pki.stranger_cert), str(pki.stranger_key))
    return ClientTls.from_files(str(pki.ca))


async def test_grpc_needs_a_client_certificate_from_the_client_ca(server: EventBusServer, pki: Pki) -> None:
    assert server.addresses is not None and server.tls is not None and server.tls.mutual
    address = str(server.addresses.grpc)
    for refused in (None, "stranger"):
        async with EventBusClient(address, tls=_client_tls(pki, refused), timeout=10, publish_retries=0) as bus:
            with pytest.raises(UnavailableError):
                await bus.publish(Event.create(type="order.paid", source="/shop", id=f"no-{refused}"))
    async with EventBusClient(address, tls=_client_tls(pki, "good"), timeout=10) as bus:
        [published] = await bus.publish(Event.create(type="order.paid", source="/shop", id="mtls-1"))
        assert not published.duplicate
        # A subscription stream works over the same mutual-TLS channel.
        async with bus.subscribe("mtls", ["order.*"], start="earliest") as subscription:
            delivery = await anext(subscription)
            assert delivery.event.event.id == "mtls-1"
            await delivery.ack()
    # Nothing the refused clients sent was stored.
    async with EventBusClient(address, tls=_client_tls(pki, "good"), timeout=10) as bus:
        events, _ = await bus.list_events()
        assert [e.event.id for e in events] == ["mtls-1"]


async def test_https_needs_a_client_certificate_from_the_client_ca(server: EventBusServer, pki: Pki) -> None:
    assert server.addresses is not None
    url = f"https://{server.addresses.http}/readyz"
    async with aiohttp.ClientSession() as http:
        for refused in (None, "stranger"):
            with pytest.raises(aiohttp.ClientError):  # the handshake (TLS 1.2) or the first read (1.3) fails
                async with http.get(url, ssl=pki.http_context(client=refused)) as response:
                    await response.read()
        async with http.get(url, ssl=pki.http_context(client="good")) as response:
            assert response.status == 200
        # Open routes stay open to any client with a good certificate; API keys are a separate layer.
        async with http.get(url.replace("/readyz", "/healthz"), ssl=pki.http_context(client="good")) as response:
            assert response.status == 200


async def test_mutual_context_requires_client_certificates(server: EventBusServer) -> None:
    assert server.tls is not None
    context = server.tls.ssl_context()
    assert context.verify_mode.name == "CERT_REQUIRED"
    # Only --tls-client-ca is trusted for clients, not the system's CAs.
    assert context.cert_store_stats()["x509_ca"] == 1
