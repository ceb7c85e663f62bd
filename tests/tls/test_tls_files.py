"""TLS files are read at start-up and checked: a missing file, a file that is not PEM, a key that does not match
its certificate or is encrypted each stop the server (or the client) with one line naming the setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from eventbus.client import ClientTls
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings, settings_from
from eventbus.errors import InvalidArgumentError
from eventbus.runtime import EventBusServer
from eventbus.tls import ServerTls
from tests.tls.conftest import Pki


def _refusal(pki: Pki, tmp_path: Path, case: str) -> tuple[dict[str, str | None], str, str]:
    """Server TLS settings for one bad case, the field the error must name, and a phrase it must contain."""
    good: dict[str, str | None] = {"cert": str(pki.server_cert), "key": str(pki.server_key), "client_ca": None}
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not PEM\n")
    binary = tmp_path / "binary.pem"
    binary.write_bytes(bytes(range(256)))
    if case == "missing cert":
        return {**good, "cert": str(tmp_path / "nowhere.pem")}, "tls-cert", "no such file"
    if case == "cert is junk":
        return {**good, "cert": str(junk)}, "tls-cert", "not a PEM certificate"
    if case == "cert is binary":
        return {**good, "cert": str(binary)}, "tls-cert", "not a PEM certificate"
    if case == "cert is a key":
        return {**good, "cert": str(pki.server_key)}, "tls-cert", "not a PEM certificate"
    if case == "cert is a directory":
        return {**good, "cert": str(tmp_path)}, "tls-cert", "cannot read it"
    if case == "missing key":
        return {**good, "key": str(tmp_path / "nowhere-key.pem")}, "tls-key", "no such file"
    if case == "key is a certificate":
        return {**good, "key": str(pki.server_cert)}, "tls-key", "not a PEM private key"
    if case == "key is damaged":
        damaged = tmp_path / "damaged-key.pem"
        damaged.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        return {**good, "key": str(damaged)}, "tls-key", "not a readable PEM private key"
    if case == "key of another certificate":
        return {**good, "key": str(pki.client_key)}, "tls-key", "does not match the certificate"
    if case == "client ca is junk":
        return {**good, "client_ca": str(junk)}, "tls-client-ca", "not a PEM certificate"
    if case == "missing client ca":
        return {**good, "client_ca": str(tmp_path / "no-ca.pem")}, "tls-client-ca", "no such file"
    if case == "cert without key":
        return {**good, "key": None}, "tls-key", "go together"
    if case == "client ca without cert":
        return {"cert": None, "key": None, "client_ca": str(pki.ca)}, "tls-client-ca", "needs --tls-cert"
    raise AssertionError(case)


CASES = [
    "missing cert",
    "cert is junk",
    "cert is binary",
    "cert is a key",
    "cert is a directory",
    "missing key",
    "key is a certificate",
    "key is damaged",
    "key of another certificate",
    "client ca is junk",
    "missing client ca",
    "cert without key",
    "client ca without cert",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_server_tls_files_are_named(pki: Pki, tmp_path: Path, case: str) -> None:
    files, field, phrase = _refusal(pki, tmp_path, case)
    with pytest.raises(InvalidArgumentError) as refused:
        ServerTls.load(files["cert"], files["key"], files["client_ca"])
    assert [v.field for v in refused.value.violations] == [field]
    assert refused.value.message.startswith(f"{field}: ") and phrase in refused.value.message


def test_encrypted_key_is_refused_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(InvalidArgumentError, match=r"^tls-key: .*encrypted-key.pem: the private key is encrypted"):
        ServerTls.load(str(pki.server_cert), str(encrypted), None)


def test_rsa_keys_and_a_chain_through_an_intermediate_load(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    cert, key = tmp_path / "chain.pem", tmp_path / "rsa-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    loaded = ServerTls.load(str(cert), str(key), None)
    assert loaded is not None and loaded.chain.count(b"BEGIN CERTIFICATE") == 2


async def test_server_with_a_bad_file_stops_before_listening(
    server_settings: ServerSettings, pki: Pki, tmp_path: Path
) -> None:
    settings = dataclasses.replace(server_settings, tls_cert=str(pki.server_cert), tls_key=str(pki.client_key))
    with pytest.raises(InvalidArgumentError, match=r"^tls-key: .* does not match the certificate"):
        EventBusServer(settings, clock=ManualClock())


def test_settings_pair_cert_and_key(pki: Pki) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^tls-cert: --tls-cert and --tls-key go together"):
        settings_from({"tls_key": str(pki.server_key)}, {})
    settings = settings_from({}, {"EVENTBUS_TLS_CERT": str(pki.server_cert), "EVENTBUS_TLS_KEY": str(pki.server_key)})
    assert (settings.tls_cert, settings.tls_key) == (str(pki.server_cert), str(pki.server_key))


@pytest.mark.parametrize(
    ("files", "field"),
    [
        ({"ca": "nowhere.pem"}, "tls-ca"),
        ({"ca": "junk"}, "tls-ca"),
        ({"cert": "client"}, "tls-key"),
        ({"key": "client"}, "tls-cert"),
        ({"cert": "client", "key": "stranger"}, "tls-key"),
    ],
)
def test_bad_client_tls_files_are_named(pki: Pki, tmp_path: Path, files: dict[str, str], field: str) -> None:
    (tmp_path / "junk").write_text("nothing here")
    paths = {
        "client": {"cert": str(pki.client_cert), "key": str(pki.client_key)},
        "stranger": {"cert": str(pki.stranger_cert), "key": str(pki.stranger_key)},
    }

    def path(slot: str) -> str | None:
        name = files.get(slot)
        if name in paths:
            return paths[name][slot]
        return str(tmp_path / name) if name else None

    with pytest.raises(InvalidArgumentError) as refused:
        ClientTls.from_files(path("ca"), path("cert"), path("key"))
    assert [v.field for v in refused.value.violations] == [field]


def test_private_keys_stay_out_of_reprs(pki: Pki) -> None:
    server = ServerTls.load(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    client = ClientTls.from_files(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    for value in (server, client):
        assert "PRIVATE KEY" not in repr(value)
