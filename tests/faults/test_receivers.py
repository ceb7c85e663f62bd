"""Receivers that misbehave on purpose: hang, reset the connection, trickle their answer, answer 10 MB, flap
between 200 and 500, answer 429 with Retry-After. Each attempt is recorded with the class of what went wrong, the
delivery is retried on the documented schedule (the manual clock moves it, no test waits for real retry delays),
and the other subscriptions keep flowing. tests/delivery/test_hostile.py has the single-request cases; these are
the retry, concurrency, memory and circuit sides of the same faults.

Every fault a receiver injects is counted; the totals are printed at the end of the module.
"""

# The in-process server fixtures of tests/delivery/conftest.py are imported (pytest finds them in this module's
# namespace) and requested by name, which ruff reads as redefining them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import socket
import struct
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
from aiohttp import web

from eventbus.bus.dispatch import DispatchSettings
from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from tests.delivery.conftest import (  # noqa: F401  (the fixtures, used by name)
    clock,
    dispatch_settings,
    receiver,
    server,
    server_settings,
    servers,
)
from tests.delivery.helpers import (
    MakeReceiver,
    Received,
    Reply,
    advance_to,
    create_endpoint,
    deliveries_of,
    delivery_of,
    eventually,
    order,
    publish,
    settle,
    system_events,
    wait_attempts,
    wait_state,
)

FAULTS: Counter[str] = Counter()  # injected by the receivers of this module, by kind
WITHIN = 15.0  # seconds of real time for an attempt that waits on a 1 s timeout (a busy machine)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(scope="module", autouse=True)
def _report_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and FAULTS:
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(FAULTS.items()))
        with capture.global_and_fixture_disabled():  # shown on a pass too, not only with a failure's output
            reporter.write_line(f"\nreceiver faults injected: {sum(FAULTS.values())} ({counts})")


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """aiohttp receivers on 127.0.0.1:0 with a handler of the test's own; the URL of each."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Callable[[bytes], bytes | None]], Awaitable[str]]]:
    """TCP receivers below HTTP: `answer(request_bytes)` gives the bytes to write back, then the connection is
    closed with a reset (SO_LINGER 0); None answers a plain 200 and closes normally."""
    started: list[asyncio.Server] = []

    async def start(answer: Callable[[bytes], bytes | None]) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
            reply = answer(received)
            if reply is None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(reply)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN

        listening = await asyncio.start_server(handle, "127.0.0.1", 0)
        started.append(listening)
        return f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/hook"

    yield start
    for listening in started:
        listening.close()
        await listening.wait_closed()


async def _only_delivery(server: EventBusServer, subscription_id: str) -> str:
    async def first() -> str | None:
        found = await deliveries_of(server, subscription_id)
        return found[0].delivery_id if found else None

    return await eventually(first, what=f"a delivery for {subscription_id}")


# -- hang -------------------------------------------------------------------------------------------------------


async def test_a_hanging_receiver_times_out_is_retried_and_holds_up_no_one(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hanging, good = await receiver(), await receiver()
    hanging.default = Reply(200, hold=True)
    stuck = await create_endpoint(server, hanging, options={"timeout": 1})
    await create_endpoint(server, good)
    published = await publish(server, *(order(n) for n in range(8)))

    await good.wait_for(8, within=WITHIN)  # every one, while the hanging endpoint's sends hang
    await hanging.wait_held(1, within=WITHIN)
    first = await delivery_of(server, stuck.subscription.id, published[0].event_id)
    record, [attempt] = await wait_attempts(server, first.delivery_id, 1, within=WITHIN)
    assert (attempt.error_class, attempt.status_code, attempt.outcome) == ("timeout", None, "retry")
    assert record.state == "pending" and attempt.next_attempt_at is not None
    # A timeout is a slow failure: the 5 s first delay is raised to the 60 s floor (±20 %).
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(seconds=48)
    FAULTS["hang"] += hanging.held

    hanging.default = Reply(200)  # it recovers; the requests it still holds are answered to no one
    hanging.release()
    advance_to(clock, attempt.next_attempt_at)
    done = await wait_state(server, first.delivery_id, "succeeded", within=WITHIN)
    assert done.attempts == 2
    assert [r.webhook_id for r in hanging.requests].count(published[0].event_id) == 2


# -- reset ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # nothing at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of the bo",  # a 200 whose body is cut off
        b"HTTP/1.1 200 OK\r\nContent-Le",  # cut inside the headers
    ],
    ids=["before-answering", "inside-the-body", "inside-the-headers"],
)
async def test_a_connection_reset_is_recorded_as_reset_and_retried(
    server: EventBusServer,
    raw: Callable[[Callable[[bytes], bytes | None]], Awaitable[str]],
    clock: ManualClock,
    reply: bytes,
) -> None:
    resets = 0

    def answer(_request: bytes) -> bytes | None:
        nonlocal resets
        if resets:
            return None  # the second attempt gets a plain 200
        resets += 1
        FAULTS["reset"] += 1
        return reply

    endpoint = await create_endpoint(server, await raw(answer))
    await publish(server, order())
    delivery_id = await _only_delivery(server, endpoint.subscription.id)
    record, [attempt] = await wait_attempts(server, delivery_id, 1, within=WITHIN)
    assert (attempt.error_class, attempt.status_code, attempt.outcome) == ("reset", None, "retry")
    assert attempt.error and record.state == "pending" and attempt.next_attempt_at is not None
    # Not a slow failure: the schedule's first delay, 5 s ±20 %.
    assert timedelta(seconds=4) <= attempt.next_attempt_at - attempt.started_at <= timedelta(seconds=6)

    advance_to(clock, attempt.next_attempt_at)
    done = await wait_state(server, delivery_id, "succeeded", within=WITHIN)
    assert done.attempts == 2


# -- trickle ----------------------------------------------------------------------------------------------------


def _trickler(part: str) -> Handler:
    """Dribbles one byte every 50 ms for 30 s: the status line and headers (`part="headers"`, written on the raw
    transport) or, after prompt headers, the body."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        FAULTS[f"trickle-{part}"] += 1
        if part == "headers":
            transport = request.transport
            assert transport is not None
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"." * 600:
                if transport.is_closing():
                    break
                transport.write(bytes([byte]))
                await asyncio.sleep(0.05)
            transport.abort()
            return web.Response()  # never written: the transport is gone
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        try:
            for _ in range(600):
                await response.write(b".")
                await asyncio.sleep(0.05)
        except (ConnectionResetError, RuntimeError):
            pass  # the sender gave up at its deadline: expected
        return response

    return handle


@pytest.mark.parametrize("part", ["headers", "body"])
async def test_a_trickled_answer_is_cut_at_the_attempt_deadline(
    server: EventBusServer, hostile: Callable[[Handler], Awaitable[str]], receiver: MakeReceiver, part: str
) -> None:
    good = await receiver()
    slow = await create_endpoint(server, await hostile(_trickler(part)), options={"timeout": 1})
    await create_endpoint(server, good)
    await publish(server, *(order(n) for n in range(3)))
    await good.wait_for(3, within=WITHIN)

    _, [attempt] = await wait_attempts(server, await _only_delivery(server, slow.subscription.id), 1, within=WITHIN)
    assert (attempt.error_class, attempt.status_code, attempt.outcome) == ("timeout", None, "retry")
    # Cut at the 1 s deadline, not after the 30 s the receiver would take (generous bound: a busy machine).
    assert timedelta(seconds=0.9) <= attempt.duration < timedelta(seconds=10)


# -- 10 MB ------------------------------------------------------------------------------------------------------


def _ten_megabytes(declared: bool) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        FAULTS["10MB"] += 1
        response = web.StreamResponse(status=200, headers={"content-type": "application/octet-stream"})
        if declared:
            response.content_length = 10 * 1024 * 1024
        await response.prepare(request)  # else chunked: the sender cannot know the size up front
        chunk = b"x" * 65536
        try:
            for _ in range(160):
                await response.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass  # the sender stopped reading at its cap and closed: expected
        return response

    return handle


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_ten_megabyte_answers_at_once_keep_memory_bounded(
    server: EventBusServer, hostile: Callable[[Handler], Awaitable[str]], declared: bool
) -> None:
    endpoint = await create_endpoint(server, await hostile(_ten_megabytes(declared)), max_concurrency=8)
    tracemalloc.start()
    try:
        await publish(server, *(order(n) for n in range(8)))

        async def all_attempted() -> list[str] | None:
            found = await deliveries_of(server, endpoint.subscription.id)
            return [d.delivery_id for d in found] if all(d.state == "succeeded" for d in found) else None

        delivery_ids = await eventually(all_attempted, within=WITHIN, what="8 deliveries succeeded")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 80 MB were offered; the reads stop at the 64 KiB cap each (and this process runs the receivers too).
    assert peak < 24 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated at the peak"
    for delivery_id in delivery_ids:
        _, [attempt] = await server.services.deliveries.get(delivery_id)
        assert attempt.status_code == 200
        assert attempt.response_body == b"x" * 4096  # the first 4 KiB, the rest dropped unread


# -- flap -------------------------------------------------------------------------------------------------------


def _flapping(pattern: str) -> Callable[[Received], Reply]:
    """Answers the n-th request by the n-th letter of `pattern` (repeated): `F` 500, `S` 200."""
    count = 0

    def respond(_request: Received) -> Reply:
        nonlocal count
        letter = pattern[count % len(pattern)]
        count += 1
        if letter == "F":
            FAULTS["flap-500"] += 1
            return Reply(500)
        return Reply(200)

    return respond


async def _advance_until_all_succeeded(
    server: EventBusServer, clock: ManualClock, subscription_id: str, count: int
) -> None:
    """Move the clock to the next due retry, wait for that attempt, and again, until all `count` deliveries
    succeeded (bounded rounds)."""
    found = await deliveries_of(server, subscription_id)
    for _ in range(100):
        await settle(server)
        found = await deliveries_of(server, subscription_id)
        if len(found) == count and all(d.state == "succeeded" for d in found):
            return
        due = [d for d in found if d.state == "pending" and d.next_attempt_at is not None]
        if due:
            first = min(due, key=lambda d: d.next_attempt_at or clock.now())
            assert first.next_attempt_at is not None
            # Plus one poll: while a subscription's pump runs, the dispatcher's loop does not look at that
            # subscription's later due times, and finds them at its next poll (1 s of clock time).
            advance_to(clock, first.next_attempt_at + DispatchSettings().poll_every)
            await wait_attempts(server, first.delivery_id, first.attempts + 1, within=WITHIN)
    raise AssertionError(f"not all succeeded: {[(d.state, d.attempts) for d in found]}")


async def test_a_flapping_receiver_gets_everything_by_retries_and_the_circuit_stays_closed(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.respond = _flapping("FS")
    endpoint = await create_endpoint(server, hook, max_concurrency=1)
    published = await publish(server, *(order(n) for n in range(10)))

    await _advance_until_all_succeeded(server, clock, endpoint.subscription.id, 10)

    assert {r.webhook_id for r in hook.requests} == {p.event_id for p in published}
    attempts = [a for d in await deliveries_of(server, endpoint.subscription.id) for a in [d.attempts]]
    assert sum(attempts) == len(hook.requests) and len(hook.requests) >= 15  # half of them failed, then retried
    # Never five failures in a row: the circuit never opened.
    assert [t for t, _ in await system_events(server, endpoint.subscription.id) if "circuit" in t] == []


async def test_a_failure_burst_opens_the_circuit_and_a_failed_probe_waits_twice_as_long(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.respond = _flapping("FFFFFF" + "S" * 100)  # five fail (the circuit opens), the first probe fails too
    endpoint = await create_endpoint(server, hook, max_concurrency=1)
    published = await publish(server, *(order(n) for n in range(8)))
    await hook.wait_for(5, within=WITHIN)

    async def circuit() -> str:
        return (await server.services.subscriptions.find(endpoint.subscription.id)).health.circuit

    await eventually(lambda: _is(circuit, "open"), what="the circuit open after 5 failures")
    await settle(server)
    assert len(hook.requests) == 5  # held: due deliveries consume no attempts while it is open
    clock.advance(timedelta(seconds=30))  # the first probe (probe_after)
    await hook.wait_for(6, within=WITHIN)
    await settle(server)
    assert await circuit() == "open" and len(hook.requests) == 6
    clock.advance(timedelta(seconds=59))  # the second probe waits 60 s
    await settle(server)
    assert len(hook.requests) == 6
    clock.advance(timedelta(seconds=1))
    await _advance_until_all_succeeded(server, clock, endpoint.subscription.id, 8)
    assert await circuit() == "closed"
    assert {r.webhook_id for r in hook.requests} == {p.event_id for p in published}


async def _is(read: Callable[[], Awaitable[str]], wanted: str) -> bool:
    return await read() == wanted


# -- 429 with Retry-After ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        ("120", 120.0, 144.0),  # 429 floor 60 s, clamp(120, 60, 120) = 120, jitter, never below 120
        ("30", 48.0, 72.0),  # below the 60 s floor: the floor wins (±20 %, never below 30)
        ("soon", 48.0, 72.0),  # unparsable: ignored, the 429 floor
        ("-5", 48.0, 72.0),  # negative: ignored
    ],
)
async def test_429_with_retry_after_is_honoured_by_the_next_attempt(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock, retry_after: str, low: float, high: float
) -> None:
    hook = await receiver()
    hook.replies.append(Reply(429, headers={"Retry-After": retry_after}))
    FAULTS["429"] += 1
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (attempt.status_code, attempt.outcome) == (429, "retry")
    assert attempt.next_attempt_at is not None
    delay = (attempt.next_attempt_at - attempt.started_at).total_seconds()
    assert low - 0.001 <= delay <= high + 0.001

    advance_to(clock, attempt.next_attempt_at - timedelta(seconds=1))
    await settle(server)
    assert len(hook.requests) == 1  # not a moment early
    advance_to(clock, attempt.next_attempt_at)
    await wait_state(server, delivery.delivery_id, "succeeded")
    assert [r.webhook_id for r in hook.requests] == [published.event_id] * 2


async def test_a_retry_after_beyond_the_max_pending_age_gets_one_last_attempt_before_expiry(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.replies.append(Reply(429, headers={"Retry-After": "99999999999"}))  # capped at 30 days, then at 3 days
    FAULTS["429"] += 1
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert attempt.next_attempt_at is not None
    # The default max pending age is 3 days: the last chance is a minute before it expires.
    assert attempt.next_attempt_at - attempt.started_at <= timedelta(days=3)
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(days=3) - timedelta(minutes=2)
    advance_to(clock, attempt.next_attempt_at)
    await wait_state(server, delivery.delivery_id, "succeeded")
