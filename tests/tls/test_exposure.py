"""The exposure rule: beyond loopback the server needs an API key, and TLS unless `--insecure`; loopback needs
neither. Nothing here listens beyond loopback: refusals happen before binding, and what is allowed is checked on
the settings alone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings, settings_from
from eventbus.errors import InvalidArgumentError
from eventbus.runtime import EventBusServer
from tests.conftest import store_url
from tests.tls.conftest import Pki


def _exposed(grpc: str = "0.0.0.0", http: str = "0.0.0.0", **changes: object) -> ServerSettings:
    settings = ServerSettings(grpc_listen=ListenAddress(grpc, 0), http_listen=ListenAddress(http, 0))
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_neither_key_nor_tls(host: str) -> None:
    _exposed(host, host).check_exposure()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "eventbus.example.com"])
def test_beyond_loopback_without_a_key_is_refused(host: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^grpc-listen: .*no API key exists"):
        _exposed(host, "127.0.0.1", insecure=True).check_exposure()


@pytest.mark.parametrize("which", ["grpc-listen", "http-listen"])
def test_beyond_loopback_without_tls_is_refused_naming_the_flags(which: str) -> None:
    grpc, http = ("0.0.0.0", "127.0.0.1") if which == "grpc-listen" else ("127.0.0.1", "0.0.0.0")
    for keyed in ({"api_key": "k"}, {}):
        with pytest.raises(InvalidArgumentError) as refused:
            _exposed(grpc, http, **keyed).check_exposure(stored_keys=not keyed)
        assert [v.field for v in refused.value.violations] == [which]
        message = refused.value.message
        assert "TLS is off" in message and "--tls-cert" in message and "--tls-key" in message
        assert "--insecure" in message


def test_key_and_tls_or_key_and_insecure_allow_it(pki: Pki) -> None:
    _exposed(api_key="k", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)).check_exposure()
    _exposed(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)).check_exposure(stored_keys=True)
    _exposed(api_key="k", insecure=True).check_exposure()
    # The flags and variables that `serve` reads lead to the same answers.
    flags = {"grpc_listen": "0.0.0.0:0", "http_listen": "[::]:0", "api_key": "k"}
    settings_from({**flags, "insecure": True}, {}).check_exposure()
    settings_from(flags, {"EVENTBUS_INSECURE": "true"}).check_exposure()
    with pytest.raises(InvalidArgumentError, match="TLS is off"):
        settings_from(flags, {"EVENTBUS_INSECURE": "no"}).check_exposure()


async def test_server_refuses_before_listening(tmp_path: Path) -> None:
    settings = dataclasses.replace(_exposed(api_key="k"), store_url=store_url(tmp_path))
    server = EventBusServer(settings, clock=ManualClock())
    try:
        with pytest.raises(InvalidArgumentError, match=r"^grpc-listen: 0.0.0.0:0 is not loopback and TLS is off"):
            await server.start()
        assert server.addresses is None and server.grpc.port == 0 and server.http_app is None
    finally:
        await server.stop(0)


def test_serve_command_refuses_with_a_usage_error(tmp_path: Path) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventbus",
            "serve",
            "--store",
            store_url(tmp_path),
            "--grpc-listen",
            "0.0.0.0:0",
            "--http-listen",
            "127.0.0.1:0",
            "--api-key",
            "k",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "grpc-listen: 0.0.0.0:0 is not loopback and TLS is off" in refused.stderr
    assert "server_ready" not in refused.stderr
