"""SSRF bypasses (DESIGN.md §7), tried against loopback traps only: every spelling of a loopback address, loopback
names, IPv4-mapped and other IPv6 forms, a resolver whose answer changes between the creation check and the
connect (DNS rebinding), and redirects to a non-allowlisted loopback address.

Each spelling is tried three ways: creating an endpoint through the REST API of a real server (refused, 400,
nothing stored), a webhook send through the egress client, and a plugin's request through the shared guarded
session (redirects followed, as aiohttp does by default). The traps must record no request at all. A positive
control shows the traps do record what reaches them."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventbus.clock import ManualClock
from eventbus.config import ListenAddress, ServerSettings
from eventbus.egress.client import EgressClient, EgressError
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.runtime import EventBusServer
from tests.conftest import fast_settings, store_url
from tests.delivery.helpers import delivery_of, order, publish, wait_attempts
from tests.rest.helpers import ADMIN_KEY, Rest
from tests.security.traps import Trap, ipv6_loopback_available

ALLOW_ONE = (ipaddress.ip_network("127.0.0.1/32"),)

# Spellings of 127.0.0.1 (no allowlist): decimal, hex, octal, short forms, trailing dot, percent-encoding, the
# unspecified address (which Linux connects to the local host), IPv6 forms that embed it, and loopback names.
SPELLINGS_OF_127_0_0_1 = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0x7F.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "0177.0.0.1",
    "0177.0.0.01",
    "017700000001",
    "0177.1",
    "127.000.000.001",
    "127.0.0.1.",
    "%31%32%37.0.0.1",
    "0.0.0.0",
    "0",
    "0x0",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "LocalHost.LocalDomain",
    "trap.localhost",
]
SPELLINGS_OF_IPV6_LOOPBACK = ["[::1]", "[0:0:0:0:0:0:0:1]", "[0000:0000::0001]", "[::0:1]", "[::]", "[::1%25lo]"]
# With 127.0.0.1/32 allowlisted: spellings of 127.0.0.2, a loopback address the allowlist does not admit.
SPELLINGS_OF_127_0_0_2 = [
    "127.0.0.2",
    "127.2",
    "127.0.2",
    "2130706434",
    "0x7f000002",
    "0177.0.0.2",
    "127.0.0.2.",
    "[::ffff:127.0.0.2]",
    "[::ffff:7f00:2]",
    "[::127.0.0.2]",
]
# Credentials and fragments that make a URL look like it goes elsewhere.
DISGUISES = [
    "http://example.com@{host}:{port}/hook",
    "http://{host}:{port}/hook#@example.com",
    "http://{host}:{port}@example.com/",
]
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
TRIES_PER_SPELLING = 3  # REST creation, webhook send, plugin session


@dataclasses.dataclass
class Guarded:
    """A real server and an egress client that share one destination policy."""

    server: EventBusServer
    rest: Rest
    egress: EgressClient

    async def create_is_refused(self, url: str) -> None:
        reply = await self.rest.post("/v1/endpoints", {"url": url, "patterns": ["order.*"]})
        assert reply.status == 400, (url, reply.status, reply.text)
        assert reply.content_type == "application/problem+json"
        assert [e["field"] for e in reply.json["errors"]] == ["options.url"], reply.text

    async def send_is_refused(self, url: str) -> EgressError:
        with pytest.raises(EgressError) as refused:
            await self.egress.post(url, b"{}", {"content-type": "application/json"}, timeout=5)
        return refused.value

    async def plugin_request_is_refused(self, url: str) -> None:
        # The session plugins get: redirects are followed unless the plugin says otherwise.
        with pytest.raises((aiohttp.ClientError, OSError, ValueError)):
            async with self.egress.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                raise AssertionError(f"{url} answered {answer.status}")

    async def every_way_is_refused(self, url: str) -> None:
        await self.create_is_refused(url)
        await self.send_is_refused(url)
        await self.plugin_request_is_refused(url)


async def _guarded(tmp_path: Path, name: str, allow: tuple[Any, ...], session: aiohttp.ClientSession) -> Guarded:
    settings = ServerSettings(
        store_url=store_url(tmp_path / name),
        grpc_listen=ListenAddress("127.0.0.1", 0),
        http_listen=ListenAddress("127.0.0.1", 0),
        api_key=ADMIN_KEY,
        allow_destinations=allow,
        shutdown_grace=0.2,
    )
    server = EventBusServer(settings, clock=ManualClock(), bus_settings=fast_settings())
    await server.start()
    assert server.addresses is not None
    egress = EgressClient(DestinationPolicy(allow), user_agent="eventbus/ssrf-test")
    await egress.start()
    return Guarded(server, Rest(session, f"http://{server.addresses.http}", ADMIN_KEY), egress)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[dict[str, Guarded]]:
    """`strict`: no allowlist at all; `one`: 127.0.0.1/32 admitted, the rest of loopback not."""
    (tmp_path / "strict").mkdir()
    (tmp_path / "one").mkdir()
    async with aiohttp.ClientSession() as session:
        made = {
            "strict": await _guarded(tmp_path, "strict", (), session),
            "one": await _guarded(tmp_path, "one", ALLOW_ONE, session),
        }
        try:
            yield made
        finally:
            for each in made.values():
                await each.egress.close()
                await each.server.stop(grace=0.2)


@pytest.fixture
async def traps() -> AsyncIterator[Callable[..., Any]]:
    started: list[Trap] = []

    async def make(host: str, **options: Any) -> Trap:
        trap = await Trap(host, **options).start()
        started.append(trap)
        return trap

    yield make
    for trap in started:
        await trap.close()


async def no_subscriptions(guarded: Guarded) -> None:
    assert (await guarded.server.services.subscriptions.list_page())[0] == []


# -- address spellings ------------------------------------------------------------------------------------------


async def test_the_traps_record_what_reaches_them(guarded: dict[str, Guarded], traps: Any) -> None:
    """Positive control: the allowlisted address does get through, so an empty trap means refused, not missed."""
    trap = await traps("127.0.0.1")
    answer = await guarded["one"].egress.post(trap.url(), b"{}", {}, timeout=5)
    assert answer.status == 200
    assert len(trap.hits) == 1


async def test_every_spelling_of_loopback_is_refused(guarded: dict[str, Guarded], traps: Any) -> None:
    trap = await traps("127.0.0.1")
    tried = 0
    for host in SPELLINGS_OF_127_0_0_1:
        await guarded["strict"].every_way_is_refused(f"http://{host}:{trap.port}/hook")
        tried += TRIES_PER_SPELLING
    for disguise in DISGUISES:
        url = disguise.format(host="127.0.0.1", port=trap.port)
        await guarded["strict"].create_is_refused(url)
        await guarded["strict"].send_is_refused(url.split("#")[0].replace("@example.com/", "/"))
        tried += 2
    assert trap.hits == []
    await no_subscriptions(guarded["strict"])
    assert tried == len(SPELLINGS_OF_127_0_0_1) * TRIES_PER_SPELLING + len(DISGUISES) * 2


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
async def test_every_spelling_of_ipv6_loopback_is_refused(guarded: dict[str, Guarded], traps: Any) -> None:
    trap = await traps("::1")
    for host in SPELLINGS_OF_IPV6_LOOPBACK:
        await guarded["strict"].every_way_is_refused(f"http://{host}:{trap.port}/hook")
        # ::1 is loopback, not 127.0.0.1/32: the allowlist of one IPv4 address does not admit it either.
        await guarded["one"].every_way_is_refused(f"http://{host}:{trap.port}/hook")
    assert trap.hits == []
    await no_subscriptions(guarded["strict"])
    await no_subscriptions(guarded["one"])


async def test_loopback_beyond_the_allowlisted_address_is_refused(guarded: dict[str, Guarded], traps: Any) -> None:
    trap = await traps("127.0.0.2")
    for host in SPELLINGS_OF_127_0_0_2:
        await guarded["one"].every_way_is_refused(f"http://{host}:{trap.port}/hook")
    assert trap.hits == []
    await no_subscriptions(guarded["one"])


# -- redirects --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
async def test_a_redirect_to_a_non_allowlisted_loopback_address_is_not_followed(
    guarded: dict[str, Guarded], traps: Any, status: int
) -> None:
    target = await traps("127.0.0.2")
    targets = [target.url(), target.url("2130706434"), target.url("[::ffff:127.0.0.2]"), target.url("127.2")]
    one = guarded["one"]
    for location in targets:
        hop = await traps("127.0.0.1", redirect_to=location, status=status)
        answer = await one.egress.post(hop.url(), b"{}", {}, timeout=5)  # webhooks: never followed
        assert answer.status == status
        await one.plugin_request_is_refused(hop.url())  # followed, then refused at the connect
        assert len(hop.hits) == 2
    assert target.hits == []


async def test_a_webhook_endpoint_that_redirects_fails_without_reaching_the_target(
    guarded: dict[str, Guarded], traps: Any
) -> None:
    target = await traps("127.0.0.2")
    hop = await traps("127.0.0.1", redirect_to=target.url(), status=307)
    one = guarded["one"]
    created = await one.rest.post("/v1/endpoints", {"url": hop.url(), "patterns": ["order.*"]})
    assert created.status == 201, created.text
    [published] = await publish(one.server, order())
    delivery = await delivery_of(one.server, created.json["id"], published.event_id)
    _, [attempt] = await wait_attempts(one.server, delivery.delivery_id, 1, within=30)
    assert attempt.status_code == 307
    assert len(hop.hits) == 1
    assert target.hits == []


# -- DNS rebinding ----------------------------------------------------------------------------------------------

REBINDING_NAME = "rebind.eventbus-test"


@contextmanager
def rebinding_resolver(answers: list[str]) -> Iterator[list[str]]:
    """The running loop's resolver (what the creation check and aiohttp's default resolver both ask) answers
    `REBINDING_NAME` with the next of `answers` each time, then keeps the last: a name rebound between the check
    and the connect. Other names resolve as usual. Yields the answers given so far."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    given: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != REBINDING_NAME:
            return await real(host, port, *args, **kwargs)
        address = answers[min(len(given), len(answers) - 1)]
        given.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
    try:
        yield given
    finally:
        del loop.getaddrinfo  # the instance attribute goes, the class's method is back


async def test_a_name_rebound_to_a_refused_address_after_the_check_is_refused_at_connect(
    guarded: dict[str, Guarded], traps: Any
) -> None:
    target = await traps("127.0.0.2")
    one = guarded["one"]
    url = target.url(REBINDING_NAME)
    with rebinding_resolver(["127.0.0.1", "127.0.0.2"]) as given:
        await one.egress.policy.check_destination(url)  # the check sees the allowlisted address
        error = await one.send_is_refused(url)
        assert error.error_class == "ssrf", error.message
        assert given == ["127.0.0.1", "127.0.0.2"]
    assert target.hits == []


async def test_an_endpoint_whose_name_is_rebound_after_creation_is_refused_at_delivery(
    guarded: dict[str, Guarded], traps: Any
) -> None:
    target = await traps("127.0.0.2")
    one = guarded["one"]
    with rebinding_resolver(["127.0.0.1", "127.0.0.2"]) as given:
        created = await one.rest.post("/v1/endpoints", {"url": target.url(REBINDING_NAME), "patterns": ["order.*"]})
        assert created.status == 201, created.text  # the name resolved to the allowlisted address then
        [published] = await publish(one.server, order())
        delivery = await delivery_of(one.server, created.json["id"], published.event_id)
        _, [attempt] = await wait_attempts(one.server, delivery.delivery_id, 1, within=30)
    assert attempt.error_class == "ssrf", attempt
    assert attempt.status_code is None
    assert given[0] == "127.0.0.1" and given[-1] == "127.0.0.2"
    assert target.hits == []


def count_bypasses_tried() -> int:
    """The figure for the closing note: every (spelling or trick, path) pair tried by this module."""
    ipv6 = len(SPELLINGS_OF_IPV6_LOOPBACK) * TRIES_PER_SPELLING * 2
    spellings = (len(SPELLINGS_OF_127_0_0_1) + len(SPELLINGS_OF_127_0_0_2)) * TRIES_PER_SPELLING
    redirects = len(REDIRECT_STATUSES) * 4 * 2 + 1
    return spellings + ipv6 + len(DISGUISES) * 2 + redirects + 2


def test_the_bypass_count_is_what_the_security_notes_say() -> None:
    assert count_bypasses_tried() == 199
