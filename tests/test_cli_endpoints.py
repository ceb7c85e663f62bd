"""`eventbus endpoints | subscriptions | deliveries | replay` as an operator runs them: real subprocesses against the
in-process server, a local receiver for the webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.commands.admin_commands import parse_headers
from eventbus.commands.client_commands import UsageError, parse_duration, parse_since
from eventbus.config import ServerSettings
from eventbus.model import Event
from eventbus.runtime import EventBusServer

WAIT = 30.0  # 12 CLI processes start at once: on a loaded 2-core machine each takes seconds


@pytest.fixture
def clock() -> ManualClock:
    """Starts at the real time: the command line reads `--since 1h` from the wall clock."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, allow_destinations=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.fixture
def address(server: EventBusServer) -> str:
    assert server.addresses is not None
    return str(server.addresses.grpc)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        assert self.code == 0, self.stderr
        return [json.loads(line) for line in self.stdout.splitlines()]


async def cli(address: str, *args: str) -> Run:
    """`python -m eventbus ARGS --server ADDRESS`, not on a terminal (so JSON lines), without the caller's env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventbus",
        *args,
        "--server",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def on_a_terminal(address: str, *args: str) -> str:
    """The command's output when stdout is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventbus", *args, "--server", address, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    assert await asyncio.wait_for(process.wait(), WAIT) == 0
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return output.decode().replace("\r\n", "\n")


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a table `print_rows` drew, by the columns of its header (a cell may be empty or hold spaces)."""
    header, *lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = [*starts[1:], None]
    return [
        {name: line[start:end].strip() for name, start, end in zip(names, starts, bounds, strict=True)}
        for line in lines
    ]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[bytes]]]:
    """A local webhook receiver: its URL, and the bodies it was sent, as they come."""
    bodies: asyncio.Queue[bytes] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await bodies.put(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", bodies
    finally:
        await runner.cleanup()


def test_flag_parsers() -> None:
    assert parse_headers(["X-Team: billing:eu", "Empty:"]) == {"X-Team": "billing:eu", "Empty": ""}
    assert parse_headers(None) is None
    for bad in ("no-colon", ": value"):
        with pytest.raises(UsageError, match="--header"):
            parse_headers([bad])
    before = datetime.now(UTC)
    assert before - timedelta(hours=2, seconds=5) <= parse_since("2h") <= datetime.now(UTC) - timedelta(hours=2)
    assert parse_since("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday")
    assert parse_duration("3d", "--max-pending-age") == timedelta(days=3)
    with pytest.raises(UsageError, match="--retry-schedule"):
        parse_duration("5x", "--retry-schedule")


async def test_endpoint_lifecycle(address: str) -> None:
    added = (
        await cli(
            address,
            "endpoints",
            "add",
            "http://127.0.0.1:9/hook",
            "--pattern",
            "order.*",
            "--header",
            "X-Team: billing:eu",
            "--format",
            "raw",
            "--timeout",
            "5",
            "--rate-limit",
            "5",
            "--retry-schedule",
            "1s,5m",
            "--max-pending-age",
            "2h",
            "--ed25519",
        )
    ).json()
    endpoint = added["id"]
    assert endpoint.startswith("sub_") and added["secret"].startswith("whsec_")
    assert added["public_key"].startswith("whpk_")
    assert added["url"] == "http://127.0.0.1:9/hook"
    assert (added["headers"], added["format"], added["timeout"]) == ({"x-team": "billing:eu"}, "raw", 5)
    assert (added["retry_schedule"], added["max_pending_age"], added["rate_limit"]) == ([1.0, 300.0], 7200.0, 5.0)
    assert (added["patterns"], added["state"], added["circuit"], added["pending"]) == (
        ["order.*"],
        "active",
        "closed",
        0,
    )

    listed, shown, table = await asyncio.gather(
        cli(address, "endpoints", "list"),
        cli(address, "endpoints", "show", endpoint),
        on_a_terminal(address, "endpoints", "list"),
    )
    assert [row["id"] for row in listed.lines()] == [endpoint]
    assert "secret" not in shown.json() and shown.json()["state"] == "active"
    # On a terminal: a table, not JSON.
    assert parse_table(table) == [
        {
            "ID": endpoint,
            "URL": "http://127.0.0.1:9/hook",
            "STATE": "active",
            "PATTERNS": "order.*",
            "CIRCUIT": "closed",
            "PENDING": "0",
            "DEAD": "0",
        }
    ]

    paused = (await cli(address, "endpoints", "pause", endpoint)).json()
    assert (paused["state"], paused["state_reason"]) == ("paused", "paused by an operator")
    assert (await cli(address, "endpoints", "resume", endpoint)).json()["state"] == "active"
    assert (await cli(address, "endpoints", "enable", endpoint)).json()["state"] == "active"

    rotated = (await cli(address, "endpoints", "rotate-secret", endpoint)).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != added["secret"]
    assert rotated["previous_secret_expires_at"]

    updated = (
        await cli(address, "endpoints", "update", endpoint, "--url", "http://127.0.0.1:9/v2", "--pattern", "invoice.*")
    ).json()
    assert (updated["url"], updated["patterns"], updated["format"]) == ("http://127.0.0.1:9/v2", ["invoice.*"], "raw")
    assert "secret" not in updated

    assert (await cli(address, "endpoints", "rm", endpoint)).json() == {"deleted": endpoint}
    gone = await cli(address, "endpoints", "show", endpoint)
    assert gone.code == 1
    assert gone.stderr.strip() == f"eventbus endpoints: subscription {endpoint!r} does not exist"
    assert (await cli(address, "endpoints", "list")).stdout == ""


async def test_deliveries_after_a_successful_delivery(
    address: str, client: EventBusClient, receiver: tuple[str, asyncio.Queue[bytes]]
) -> None:
    url, bodies = receiver
    endpoint = (await cli(address, "endpoints", "add", url, "--pattern", "order.*")).json()["id"]
    [published] = await client.publish(Event.create(type="order.paid", source="/shop", id="o-1", data={"n": 1}))
    await asyncio.wait_for(bodies.get(), WAIT)

    async def recorded() -> None:
        # The receiver has answered; the attempt is recorded right after: re-read (a gRPC round trip) until it is.
        while not (await client.list_deliveries(subscription_id=endpoint, state="succeeded"))[0]:
            pass

    await asyncio.wait_for(recorded(), WAIT)
    listing = await cli(address, "deliveries", "list", "--subscription", endpoint, "--state", "succeeded")
    [row] = listing.lines()
    assert (row["event_id"], row["state"], row["attempt_count"]) == (published.event_id, "succeeded", 1)
    table = await on_a_terminal(address, "deliveries", "list", "--subscription", endpoint)
    assert parse_table(table) == [
        {
            "ID": row["id"],
            "SUBSCRIPTION_ID": endpoint,
            "EVENT_ID": published.event_id,
            "STATE": "succeeded",
            "ATTEMPT_COUNT": "1",
            "NEXT_ATTEMPT_AT": "-",
            "LAST_ERROR": "-",
        }
    ]
    by_id, by_source, shown, why = await asyncio.gather(
        cli(address, "deliveries", "list", "--event", published.event_id),
        cli(address, "deliveries", "list", "--source", "/shop", "--id", "o-1"),
        cli(address, "deliveries", "show", row["id"]),
        cli(address, "endpoints", "why", endpoint, published.event_id),
    )
    assert [r["id"] for r in by_id.lines()] == [r["id"] for r in by_source.lines()] == [row["id"]]
    [attempt] = shown.json()["attempts"]
    assert (attempt["number"], attempt["status_code"], attempt["outcome"]) == (1, 200, "succeeded")
    assert attempt["response_body"] == "ok"
    assert why.json()["verdict"] == "succeeded"
    assert why.json()["delivery"]["id"] == row["id"]

    resent = (await cli(address, "deliveries", "resend", row["id"])).json()
    assert resent["id"] == row["id"]
    await asyncio.wait_for(bodies.get(), WAIT)
    replayed = (await cli(address, "replay", "--to", endpoint, "--pattern", "order.*", "--since", "1h")).json()
    assert replayed == {"subscription_id": endpoint, "upto_seq": published.seq}
    await asyncio.wait_for(bodies.get(), WAIT)
    recovered = (await cli(address, "endpoints", "recover", endpoint, "--since", "1h")).json()
    assert recovered == {"subscription_id": endpoint, "recovered": 0}  # nothing is dead


async def test_subscriptions_of_every_kind(address: str, client: EventBusClient) -> None:
    added = (
        await cli(
            address,
            "subscriptions",
            "add",
            "--kind",
            "webhook",
            "--pattern",
            "invoice.*",
            "--options",
            '{"headers": {"X-A": "1"}, "url": "http://127.0.0.1:9/ignored"}',
            "--option",
            "url=http://127.0.0.1:9/hook",
            "--paused",
        )
    ).json()
    assert added["options"]["url"] == "http://127.0.0.1:9/hook"
    assert added["options"]["headers"] == {"x-a": "1"}
    assert (added["kind"], added["state"]) == ("webhook", "paused")
    assert added["secret"].startswith("whsec_")
    subscription = added["id"]

    await client.publish(Event.create(type="order.paid", source="/shop", id="o-2"))
    listed, shown, why = await asyncio.gather(
        cli(address, "subscriptions", "list", "--kind", "webhook"),
        cli(address, "subscriptions", "show", subscription),
        cli(address, "subscriptions", "why", subscription, "--source", "/shop", "--id", "o-2"),
    )
    assert [r["id"] for r in listed.lines()] == [subscription]
    assert shown.json()["options"]["url"] == "http://127.0.0.1:9/hook"
    assert why.json()["verdict"] == "not_matched"
    assert (await cli(address, "subscriptions", "resume", subscription)).json()["state"] == "active"
    assert (await cli(address, "subscriptions", "rm", subscription)).json() == {"deleted": subscription}


USAGE_ERRORS = [
    ("endpoints", "add", "http://127.0.0.1:9/hook", "--header", "no-colon"),
    ("endpoints", "add", "http://127.0.0.1:9/hook", "--filter", "{nope"),
    ("endpoints", "add", "http://127.0.0.1:9/hook", "--retry-schedule", "5s,soon"),
    ("endpoints", "add", "http://127.0.0.1:9/hook", "--format", "xml"),
    ("endpoints", "add"),
    ("endpoints", "recover", "sub_x", "--since", "soon"),
    ("endpoints", "why", "sub_x"),
    ("endpoints", "why", "sub_x", "order-1"),
    ("deliveries", "list", "--source", "/shop"),
    ("subscriptions", "add", "--kind", "webhook", "--option", "no-equals"),
    ("subscriptions", "add", "--kind", "webhook", "--options", "[1]"),
    ("replay", "--to", "sub_x", "--since", "2026-13-01"),
]


async def test_usage_errors_exit_2_and_server_errors_exit_1(address: str) -> None:
    usage = await asyncio.gather(*(cli(address, *args) for args in USAGE_ERRORS))
    for args, run in zip(USAGE_ERRORS, usage, strict=True):
        assert run.code == 2, (args, run)
        assert run.stdout == ""
        assert run.stderr.strip(), args

    refused, missing, no_delivery = await asyncio.gather(
        cli(address, "endpoints", "add", "ftp://example.com/hook"),
        cli(address, "endpoints", "show", "sub_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
        cli(address, "deliveries", "show", "dlv_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
    )
    assert (refused.code, missing.code, no_delivery.code) == (1, 1, 1)
    assert refused.stderr == "eventbus endpoints: options.url: scheme must be http or https\n"
    assert len(missing.stderr.splitlines()) == len(no_delivery.stderr.splitlines()) == 1
    assert "does not exist" in no_delivery.stderr
