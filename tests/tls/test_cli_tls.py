"""The command line against a real `eventbus serve --tls-cert --tls-key --tls-client-ca` process: client commands
take `--tls-ca` and a client certificate (flags or `EVENTBUS_TLS_*`), and say what went wrong on one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerProcess, start_server_process
from tests.tls.conftest import Pki


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The parent's EVENTBUS_* variables must not leak into what each call is testing.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_cli_over_mutual_tls(tmp_path: Path, pki: Pki, server_process: list[ServerProcess]) -> None:
    running = start_server_process(
        tmp_path,
        extra=["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)],
    )
    server_process.append(running)
    assert '"tls": "mutual"' in running.log()
    server = ["--server", running.grpc]
    identity = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]

    published = run_cli("publish", *server, *identity, "--type", "order.paid", "--source", "/shop", "--id", "cli-1")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["id"] == "cli-1"

    # The same identity from the environment.
    env = {
        "EVENTBUS_SERVER": running.grpc,
        "EVENTBUS_TLS_CA": str(pki.ca),
        "EVENTBUS_TLS_CLIENT_CERT": str(pki.client_cert),
        "EVENTBUS_TLS_CLIENT_KEY": str(pki.client_key),
    }
    listed = run_cli("events", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ["cli-1"]

    # Refusals: no client certificate, plaintext, a server CA we do not trust. Exit 1, one line.
    for refused_args in (["--tls-ca", str(pki.ca)], [], ["--tls"]):
        refused = run_cli("groups", "list", *server, *refused_args)
        assert refused.returncode == 1, (refused_args, refused.stdout, refused.stderr)
        # One line: grpc core's own handshake log lines are kept out of it (eventbus/commands/__init__.py).
        assert refused.stderr.startswith("eventbus groups: ") and refused.stderr.count("\n") == 1, refused.stderr
    # ...and the server's JSON log stays JSON: no grpc core lines about the handshakes it refused.
    assert all(line.startswith("{") for line in running.log().splitlines()), running.log()

    # Bad input on the command line: exit 2 naming the flag, before any connection.
    missing = run_cli("groups", "list", *server, "--tls-ca", str(tmp_path / "nowhere.pem"))
    assert missing.returncode == 2
    assert "tls-ca: " in missing.stderr and "no such file" in missing.stderr
