"""A throwaway CA made in the test session (trustme), its PEM files on disk, and TLS contexts for the HTTP side.

`pki` holds: the CA that signs the server (for 127.0.0.1 and localhost) and the good client, and a second CA
whose client certificate a mutual-TLS server must refuse.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA both servers' certificate and the good client's chain up to
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # another CA: what it signs means nothing to our servers
    stranger_cert: Path
    stranger_key: Path

    def http_context(self, *, client: str | None = None) -> ssl.SSLContext:
        """An HTTPS client context trusting our CA; `client` = "good" or "stranger" presents that certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if client == "good":
            context.load_cert_chain(self.client_cert, self.client_key)
        elif client == "stranger":
            context.load_cert_chain(self.stranger_cert, self.stranger_key)
        return context


def _write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(organization_name="eventbus tests"), trustme.CA(organization_name="someone else")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    stranger.cert_pem.write_to_path(str(directory / "stranger-ca.pem"))
    server_cert, server_key = _write_leaf(ca.issue_cert("127.0.0.1", "localhost"), directory, "server")
    client_cert, client_key = _write_leaf(ca.issue_cert("billing.client.test"), directory, "client")
    stranger_cert, stranger_key = _write_leaf(stranger.issue_cert("billing.client.test"), directory, "stranger")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        stranger_ca=directory / "stranger-ca.pem",
        stranger_cert=stranger_cert,
        stranger_key=stranger_key,
    )
