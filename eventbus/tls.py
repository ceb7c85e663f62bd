"""TLS material read once and checked up front: the servers' contexts and credentials, the client's credentials."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from eventbus.errors import InvalidArgumentError

# `ssl.SSLError.reason` when a private key does not belong to the certificate it is loaded with.
_KEY_MISMATCH = "KEY_VALUES_MISMATCH"


def _read(path: str, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidArgumentError.for_field(field, f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidArgumentError.for_field(field, f"{path}: cannot read it ({exc.strerror or exc})") from None


def _certificates(path: str, field: str) -> bytes:
    """PEM certificates, parsed here so a bad file is named now rather than by an opaque handshake failure later."""
    data = _read(path, field)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidArgumentError.for_field(
            field, f"{path}: not a PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)"
        ) from None
    return data


def _refuse_password() -> bytes:
    """OpenSSL would prompt on the terminal for an encrypted key; a server that starts unattended must not."""
    raise InvalidArgumentError.for_field("tls-key", "the private key is encrypted: give an unencrypted PEM key")


def _key_pair(cert_path: str, key_path: str, cert_field: str, key_field: str) -> tuple[bytes, bytes]:
    """The certificate chain and its private key, checked to belong together (grpc would only fail at handshake)."""
    chain = _certificates(cert_path, cert_field)
    key = _read(key_path, key_field)
    if b"PRIVATE KEY-----" not in key:
        raise InvalidArgumentError.for_field(key_field, f"{key_path}: not a PEM private key")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError.for_field(key_field, f"{key_path}: {exc.violations[0].detail}") from None
    except ssl.SSLError as exc:
        if exc.reason == _KEY_MISMATCH:
            raise InvalidArgumentError.for_field(
                key_field, f"{key_path}: does not match the certificate in {cert_path} (--{cert_field})"
            ) from None
        raise InvalidArgumentError.for_field(key_field, f"{key_path}: not a readable PEM private key") from None
    return chain, key


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What both servers present: a certificate chain and key, and for mutual TLS the CA that signs clients."""

    cert_path: str
    key_path: str
    chain: bytes
    key: bytes = field(repr=False)  # a private key never reaches a log line or a traceback
    client_ca_path: str | None = None
    client_ca: bytes | None = None

    @classmethod
    def load(cls, cert: str | None, key: str | None, client_ca: str | None) -> ServerTls | None:
        """Read and check the files named by the settings (None when TLS is off); errors name the setting."""
        if not cert and not key:
            if client_ca:
                raise InvalidArgumentError.for_field("tls-client-ca", "mutual TLS needs --tls-cert and --tls-key too")
            return None
        if not cert or not key:
            raise InvalidArgumentError.for_field(
                "tls-cert" if not cert else "tls-key", "--tls-cert and --tls-key go together"
            )
        chain, private_key = _key_pair(cert, key, "tls-cert", "tls-key")
        ca = _certificates(client_ca, "tls-client-ca") if client_ca else None
        return cls(cert, key, chain, private_key, client_ca, ca)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def ssl_context(self) -> ssl.SSLContext:
        """For the aiohttp site. A bare server context, not `create_default_context`: that one would also trust the
        system's CAs for client certificates, and mutual TLS must admit only `--tls-client-ca`."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path, password=_refuse_password)
        if self.client_ca is not None:
            context.load_verify_locations(cadata=self.client_ca.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """For the gRPC port (grpc's own TLS stack: 1.2 at least by default). With a client CA, a client without a
        certificate it signed fails the handshake."""
        return grpc.ssl_server_credentials(
            [(self.key, self.chain)], root_certificates=self.client_ca, require_client_auth=self.mutual
        )


@dataclass(frozen=True, slots=True)
class ClientTls:
    """A client's TLS: the CA that signed the server (None: grpc's bundled public roots) and, for servers that
    demand mutual TLS, a client certificate and key. Build it with `ClientTls.from_files`."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(cls, ca: str | None = None, cert: str | None = None, key: str | None = None) -> ClientTls:
        """Read and check the files now, so a wrong path is named before any connection is tried."""
        if bool(cert) != bool(key):
            raise InvalidArgumentError.for_field(
                "tls-cert" if not cert else "tls-key", "--tls-cert and --tls-key go together"
            )
        roots = _certificates(ca, "tls-ca") if ca else None
        if cert and key:
            chain, private_key = _key_pair(cert, key, "tls-cert", "tls-key")
            return cls(roots, chain, private_key)
        return cls(roots)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
