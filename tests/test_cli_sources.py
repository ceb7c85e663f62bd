"""`eventbus sources ...` as an operator runs it: real subprocesses against `eventbus serve` (a real server process
with the installed plugins, connector `standardwebhooks`); without that plugin, against the in-process server with a
test connector."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from eventbus.bus.service import BusSettings
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.plugin import load_plugins
from eventbus.runtime import EventBusServer
from eventbus.signing import sign_v1
from tests.conftest import ServerProcess, start_server_process
from tests.grpc.test_admin_sources import PickyConnector
from tests.plugin.support import NO_AUTOLOAD, RegisteringPlugin
from tests.test_cli_endpoints import Run, cli, on_a_terminal

# Secrets of the shape the standardwebhooks connector can verify with (whsec_ + base64 of 24 bytes).
G1, G2, G3, G4 = ("whsec_" + c * 32 for c in "BCDE")

STANDARD_WEBHOOKS = load_plugins().connectors().get("standardwebhooks") is not None


@dataclass(frozen=True)
class Target:
    """Where the commands go, the connector to use, and one option it accepts."""

    grpc: str
    http: str
    connector: str
    option: tuple[str, str]


@pytest.fixture
async def target(
    tmp_path: Path,
    server_process: list[ServerProcess],
    server_settings: ServerSettings,
    clock: ManualClock,
    bus_settings: BusSettings,
) -> AsyncIterator[Target]:
    if STANDARD_WEBHOOKS:
        running = start_server_process(tmp_path)
        server_process.append(running)
        yield Target(running.grpc, running.http, "standardwebhooks", ("type", "order.paid"))
        return
    plugins = load_plugins(extra=[RegisteringPlugin("picky-plugin", connectors=(PickyConnector(),))], env=NO_AUTOLOAD)
    server = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings, plugins=plugins)
    addresses = await server.start()
    try:
        yield Target(str(addresses.grpc), str(addresses.http), "picky", ("mode", "lax"))
    finally:
        await server.stop(grace=0.5)


async def sources(target: Target, *args: str) -> Run:
    return await cli(target.grpc, "sources", *args)


async def test_add_show_list_update_rm(target: Target, tmp_path: Path) -> None:
    key, value = target.option
    added = (await sources(target, "add", "shop", "--connector", target.connector, "--rate-limit", "20")).json()
    assert added["id"].startswith("src_") and added["name"] == "shop" and added["connector"] == target.connector
    assert added["path"] == "/hooks/shop"
    assert added["secret"].startswith("whsec_")  # generated: shown this once
    assert (added["enabled"], added["rate_limit"], added["secrets_count"]) == (True, 20, 1)
    assert added["previous_secret_expires_at"] is None

    shown = await sources(target, "show", "shop")
    assert "secret" not in shown.json() and added["secret"] not in shown.stdout
    assert shown.json() == {k: v for k, v in added.items() if k != "secret"}
    assert (await sources(target, "show", added["id"])).json() == shown.json()

    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps({key: value}))
    given = await sources(
        target, "add", "crm", "--connector", target.connector, "--secret", G1, "--secret", G2,
        "--options", f"@{options_file}", "--disabled",
    )  # fmt: skip
    crm = given.json()
    assert "secret" not in crm and G1 not in given.stdout  # the caller knows them: nothing revealed
    assert (crm["secrets_count"], crm["enabled"], crm["options"]) == (2, False, {key: value})

    listed = await sources(target, "list")
    assert [row["name"] for row in listed.lines()] == ["shop", "crm"]
    for secret in (added["secret"], G1, G2):
        assert secret not in listed.stdout

    updated = (await sources(target, "update", "crm", "--option", f"{key}={value}", "--rate-limit", "1.5")).json()
    assert (updated["rate_limit"], updated["options"], updated["enabled"]) == (1.5, {key: value}, False)
    assert (await sources(target, "enable", "crm")).json()["enabled"] is True
    assert (await sources(target, "disable", "crm")).json()["enabled"] is False
    replaced = (await sources(target, "update", "crm", "--secret", G3, "--rate-limit", "0")).json()
    assert (replaced["secrets_count"], replaced["rate_limit"]) == (1, None)

    assert (await sources(target, "rm", "crm")).json() == {"deleted": "crm"}
    assert [row["name"] for row in (await sources(target, "list")).lines()] == ["shop"]


async def test_rotate_secret(target: Target) -> None:
    await sources(target, "add", "shop", "--connector", target.connector, "--secret", "whsec_" + "A" * 32)
    rotated = (await sources(target, "rotate-secret", "shop")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secrets_count"] == 2
    assert rotated["previous_secret_expires_at"] is not None
    given = (await sources(target, "rotate-secret", "shop", "--secret", G4)).json()
    assert given["secret"] == G4 and given["secrets_count"] == 2
    shown = await sources(target, "show", "shop")
    assert G4 not in shown.stdout and shown.json()["secrets_count"] == 2


@pytest.mark.skipif(not STANDARD_WEBHOOKS, reason="the standardwebhooks connector is not installed")
async def test_the_printed_secret_verifies_a_delivery(target: Target) -> None:
    secret = (await sources(target, "add", "shop", "--connector", "standardwebhooks")).json()["secret"]
    body = json.dumps({"type": "order.paid", "data": {"total": 10}}).encode()
    timestamp = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_v1(secret, "msg_1", timestamp, body),
        "content-type": "application/json",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://{target.http}/hooks/shop", data=body, headers=headers) as answer,
    ):
        assert answer.status == 202, await answer.text()


async def test_events_show_prints_the_raw_request(target: Target) -> None:
    """`events show` of a `/hooks` event: the request as it was kept (redacted), in JSON and as a table; with a key
    that may read events but not raw requests (`subscribe`), the event alone."""
    added = (await sources(target, "add", "shop", "--connector", target.connector)).json()
    body = json.dumps({"type": "order.paid", "data": {"total": 10}}).encode()
    headers = {"content-type": "application/json", "x-api-token": "t0psecret", "x-trace": "t-1"}
    if target.connector == "standardwebhooks":
        timestamp = int(time.time())
        signature = sign_v1(added["secret"], "msg_1", timestamp, body)
        headers.update({"webhook-id": "msg_1", "webhook-timestamp": str(timestamp), "webhook-signature": signature})
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://{target.http}/hooks/shop?token=url-secret", data=body, headers=headers) as answer,
    ):
        assert answer.status == 202, await answer.text()
        [accepted] = (await answer.json())["events"]
    event_id = accepted["event_id"]

    shown = (await cli(target.grpc, "events", "show", event_id, "--json")).json()
    assert (shown["event_id"], shown["source"]) == (event_id, "/hooks/shop")
    raw = shown["raw_request"]
    assert raw["request_id"].startswith("req_") and (raw["method"], raw["path"]) == ("POST", "/hooks/shop")
    assert raw["query"] == [["token", "[redacted]"]]
    sent = {name.lower(): value for name, value in raw["headers"]}
    assert (sent["x-api-token"], sent["x-trace"]) == ("[redacted]", "t-1")
    assert (raw["body"], raw["body_base64"], raw["remote"]) == (body.decode(), None, "127.0.0.1")
    for secret in ("t0psecret", "url-secret", added["secret"]):
        assert secret not in json.dumps(shown)

    table = await on_a_terminal(target.grpc, "events", "show", event_id)
    assert "event_id" in table and event_id in table and "raw request" in table
    assert "POST /hooks/shop?token=[redacted]" in table and body.decode() in table
    assert "x-api-token: [redacted]" in table.lower() and "x-trace: t-1" in table.lower()
    assert "t0psecret" not in table and "url-secret" not in table

    admin = (await cli(target.grpc, "keys", "create", "--scope", "admin", "--json")).json()["key"]
    reader = (await cli(target.grpc, "keys", "create", "--scope", "subscribe", "--api-key", admin, "--json")).json()
    as_reader = (await cli(target.grpc, "events", "show", event_id, "--api-key", reader["key"], "--json")).json()
    assert "raw_request" not in as_reader and as_reader == {k: v for k, v in shown.items() if k != "raw_request"}
    as_admin = (await cli(target.grpc, "events", "show", event_id, "--api-key", admin, "--json")).json()
    assert as_admin == shown


async def test_refusals(target: Target) -> None:
    add = ("add", "shop", "--connector", target.connector)
    bad_name, unknown, three, bad_option, not_json, no_connector, no_change = await asyncio.gather(
        sources(target, "add", "Bad Name", "--connector", target.connector),
        sources(target, "add", "shop", "--connector", "nosuch"),
        sources(target, *add, *["--secret", "s"] * 3),
        sources(target, *add, "--option", "colour=red"),
        sources(target, *add, "--options", "[1]"),
        sources(target, "add", "shop"),
        sources(target, "update", "shop"),
    )
    assert bad_name.code == 1 and "name:" in bad_name.stderr
    assert unknown.code == 1 and "unknown connector 'nosuch'" in unknown.stderr and target.connector in unknown.stderr
    assert three.code == 1 and "secrets: at most 2" in three.stderr
    assert bad_option.code == 1 and "options.colour" in bad_option.stderr
    assert not_json.code == 2 and "--options" in not_json.stderr
    assert no_connector.code == 2 and "--connector" in no_connector.stderr
    assert no_change.code == 2 and "nothing to change" in no_change.stderr
    assert (await sources(target, "list")).stdout == ""  # nothing stored

    assert (await sources(target, *add)).code == 0
    actions = [("show",), ("update", "--rate-limit", "1"), ("rm",), ("enable",), ("rotate-secret",)]
    taken, *missing = await asyncio.gather(
        sources(target, *add), *(sources(target, action, "nosuch", *flags) for action, *flags in actions)
    )
    assert taken.code == 1 and "shop" in taken.stderr
    for action, run in zip(actions, missing, strict=True):
        assert run.code == 1 and "source 'nosuch' does not exist" in run.stderr, action


async def test_tables_on_a_terminal(target: Target) -> None:
    added = await on_a_terminal(target.grpc, "sources", "add", "shop", "--connector", target.connector)
    assert "path" in added and "/hooks/shop" in added and "whsec_" in added and "shown this once" in added
    listed = await on_a_terminal(target.grpc, "sources", "list")
    header, row = listed.splitlines()
    assert header.split() == ["NAME", "CONNECTOR", "PATH", "ENABLED", "RATE_LIMIT", "SECRETS_COUNT", "ID"]
    assert row.split()[:6] == ["shop", target.connector, "/hooks/shop", "True", "-", "1"]
    assert "whsec_" not in listed
