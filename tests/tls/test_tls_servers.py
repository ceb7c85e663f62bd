"""TLS on both servers (`--tls-cert`, `--tls-key`): a client trusting the CA gets through; plaintext and clients that
do not trust the server's CA are refused."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from eventbus.client import ClientTls, EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import UnavailableError
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from tests.tls.conftest import Pki


@pytest.fixture
def server_settings(server_settings: ServerSettings, pki: Pki) -> ServerSettings:
    return dataclasses.replace(server_settings, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))


def _grpc(server: EventBusServer) -> str:
    assert server.addresses is not None
    return str(server.addresses.grpc)


def _https(server: EventBusServer, path: str) -> str:
    assert server.addresses is not None
    return f"https://{server.addresses.http}{path}"


async def test_grpc_over_tls_with_the_ca(server: EventBusServer, pki: Pki) -> None:
    assert server.tls is not None and not server.tls.mutual
    async with EventBusClient(_grpc(server), tls=ClientTls.from_files(ca=str(pki.ca)), timeout=10) as bus:
        [published] = await bus.publish(Event.create(type="order.paid", source="/shop", id="tls-1", data={"n": 1}))
        assert (await bus.get_event(published.event_id)).event.id == "tls-1"
        assert (await bus.list_groups())[0] == []


async def test_localhost_name_is_in_the_certificate_too(server: EventBusServer, pki: Pki) -> None:
    assert server.addresses is not None
    address = f"localhost:{server.addresses.grpc.port}"
    async with EventBusClient(address, tls=ClientTls.from_files(ca=str(pki.ca)), timeout=10) as bus:
        assert (await bus.list_groups())[0] == []


async def test_plaintext_grpc_client_is_refused(server: EventBusServer) -> None:
    async with EventBusClient(_grpc(server), timeout=10, publish_retries=0) as plain:
        with pytest.raises(UnavailableError):
            await plain.list_groups()


@pytest.mark.parametrize("roots", ["public", "stranger"])
async def test_client_that_does_not_trust_the_ca_is_refused(server: EventBusServer, pki: Pki, roots: str) -> None:
    tls = ClientTls() if roots == "public" else ClientTls.from_files(ca=str(pki.stranger_ca))
    async with EventBusClient(_grpc(server), tls=tls, timeout=10, publish_retries=0) as doubtful:
        with pytest.raises(UnavailableError):
            await doubtful.list_groups()


async def test_https_health_readiness_and_rest(server: EventBusServer, pki: Pki) -> None:
    context = pki.http_context()
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(_https(server, path), ssl=context) as response:
                assert response.status == 200, path
        async with http.get(_https(server, "/v1/subscriptions"), ssl=context) as response:
            assert response.status == 200


async def test_https_refuses_plaintext_and_untrusting_clients(server: EventBusServer, pki: Pki) -> None:
    assert server.addresses is not None
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://{server.addresses.http}/healthz") as response:
                await response.read()
        stranger = ssl.create_default_context(cafile=str(pki.stranger_ca))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(_https(server, "/healthz"), ssl=stranger) as response:
                await response.read()
        # ...and the server still serves after all that.
        async with http.get(_https(server, "/readyz"), ssl=pki.http_context()) as response:
            assert response.status == 200


async def test_https_context_is_tls_1_2_and_up_without_client_certificates(server: EventBusServer) -> None:
    # TLS 1.0/1.1 cannot be tried from here (this OpenSSL refuses them on the client side before the server could), so
    # the server's own context is what shows the floor.
    assert server.tls is not None
    context = server.tls.ssl_context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # no client CA: no client certificate asked for


async def test_certificate_for_another_name_is_refused(
    server_settings: ServerSettings, pki: Pki, tmp_path: Path
) -> None:
    """A client checks the server's certificate covers the address it dialled, not only who signed it."""
    leaf = trustme.CA().issue_cert("elsewhere.example")
    cert, key = tmp_path / "elsewhere.pem", tmp_path / "elsewhere-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca = tmp_path / "elsewhere-ca.pem"
    ca.write_bytes(leaf.cert_chain_pems[-1].bytes())
    settings = dataclasses.replace(server_settings, tls_cert=str(cert), tls_key=str(key))
    elsewhere = EventBusServer(settings, clock=ManualClock())
    await elsewhere.start()
    try:
        tls = ClientTls.from_files(ca=str(ca))
        async with EventBusClient(_grpc(elsewhere), tls=tls, timeout=10, publish_retries=0) as bus:
            with pytest.raises(UnavailableError) as refused:
                await bus.list_groups()
        assert "Hostname Verification Check failed" in refused.value.message
    finally:
        await elsewhere.stop(0)
