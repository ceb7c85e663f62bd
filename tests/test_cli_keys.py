"""`eventbus keys create | list | revoke` as an operator runs them: real subprocesses against the in-process server."""

from __future__ import annotations

import hashlib

import pytest

from eventbus.runtime import EventBusServer
from tests.test_cli_endpoints import cli, on_a_terminal, parse_table


@pytest.fixture
def address(server: EventBusServer) -> str:
    assert server.addresses is not None
    return str(server.addresses.grpc)


async def test_create_list_revoke(server: EventBusServer, address: str) -> None:
    # An open server on loopback: the first key (an admin one) is made without a key.
    created = (await cli(address, "keys", "create", "--scope", "admin", "--name", "ops", "--json")).json()
    key = created["key"]
    assert key.startswith("ebk_") and created["id"] == "key_" + key.split("_", 2)[1]
    assert created["scopes"] == ["admin"] and created["name"] == "ops" and created["revoked_at"] is None

    refused = await cli(address, "keys", "list", "--json")
    assert refused.code == 1 and "API key is required" in refused.stderr

    shop = (await cli(address, "keys", "create", "--scope", "publish,subscribe", "--api-key", key, "--json")).json()
    assert shop["scopes"] == ["publish", "subscribe"]

    listed = await cli(address, "keys", "list", "--api-key", key, "--json")
    assert [row["id"] for row in listed.lines()] == [created["id"], shop["id"]]
    assert all("key" not in row for row in listed.lines())
    table = await on_a_terminal(address, "keys", "list", "--api-key", key)
    rows = parse_table(table)  # on a terminal: a table, not JSON
    assert [(r["ID"], r["NAME"], r["SCOPES"], r["REVOKED_AT"]) for r in rows] == [
        (created["id"], "ops", "admin", "-"),
        (shop["id"], "", "publish,subscribe", "-"),
    ]
    assert list(rows[0]) == ["ID", "NAME", "SCOPES", "CREATED_AT", "LAST_USED_AT", "REVOKED_AT"]
    assert rows[0]["CREATED_AT"] == created["created_at"]
    for secret in (key, shop["key"]):
        for shown in (listed.stdout, table):
            assert secret not in shown and hashlib.sha256(secret.encode()).hexdigest() not in shown

    revoked = (await cli(address, "keys", "revoke", shop["id"], "--api-key", key, "--json")).json()
    assert revoked["id"] == shop["id"] and revoked["revoked_at"] is not None
    publish = await cli(address, "publish", "--type", "a.b", "--source", "/s", "--api-key", shop["key"])
    assert publish.code == 1 and "not valid" in publish.stderr

    assert [row["id"] for row in (await cli(address, "keys", "list", "--api-key", key)).lines()] == [created["id"]]
    every = (await cli(address, "keys", "list", "--all", "--api-key", key)).lines()
    assert [(row["id"], row["revoked_at"] is not None) for row in every] == [(created["id"], False), (shop["id"], True)]


async def test_refusals(server: EventBusServer, address: str) -> None:
    unknown = await cli(address, "keys", "create", "--scope", "root")
    assert unknown.code == 1 and "scopes" in unknown.stderr and "'root' is not a scope" in unknown.stderr
    not_admin = await cli(address, "keys", "create", "--scope", "publish")
    assert not_admin.code == 1 and "first key must have the admin scope" in not_admin.stderr
    key = (await cli(address, "keys", "create", "--scope", "admin")).json()["key"]
    missing = await cli(address, "keys", "revoke", "key_01JAAAAAAAAAAAAAAAAAAAAAAA", "--api-key", key)
    assert missing.code == 1 and "no API key" in missing.stderr
    usage = await cli(address, "keys", "create")
    assert usage.code == 2 and "--scope" in usage.stderr
