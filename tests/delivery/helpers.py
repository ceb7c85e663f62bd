"""Helpers of the outbound-webhook behaviour tests: endpoints, events, and waits bounded by a timeout."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from eventbus.bus.subscriptions import SubscriptionInfo, SubscriptionInput
from eventbus.clock import ManualClock
from eventbus.model import Event, PublishResult
from eventbus.runtime import EventBusServer
from eventbus.store.base import Subscription
from eventbus.store.records import Attempt, DeliveryRecord

T = TypeVar("T")
WAIT = 5.0  # seconds of real time for something that must happen


@dataclass(frozen=True, slots=True)
class Reply:
    """How the receiver answers one request: `hold` keeps it unanswered until the test releases it, `delay`
    answers that many seconds late (a slow receiver)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False
    delay: float = 0.0
    body: bytes = b""


@dataclass(slots=True)
class Received:
    """One request as the receiver saw it (header names lower-cased, as the verifiers want them)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # loop time

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def timestamp(self) -> int:
        return int(self.headers["webhook-timestamp"])

    def json(self) -> Any:
        return json.loads(self.body)

    def signatures(self, version: str = "v1") -> list[str]:
        entries = [entry.partition(",") for entry in self.headers["webhook-signature"].split()]
        return [value for name, _, value in entries if name == version]


# Every live receiver: `settle` counts the requests they hold (held or slow answers) as the receivers' business.
_RECEIVERS: weakref.WeakSet[Receiver] = weakref.WeakSet()


class Receiver:
    """An aiohttp app on 127.0.0.1:0 that records every request and answers as the test programs it:
    `replies` are used one per request (then `default`), or `respond(request)` decides when set."""

    def __init__(self) -> None:
        _RECEIVERS.add(self)
        self.requests: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.respond: Callable[[Received], Reply] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.changed = asyncio.Condition()
        self._held: deque[asyncio.Event] = deque()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        self._closing = True
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            asyncio.get_running_loop().time(),
        )
        if self.respond is not None:
            reply = self.respond(received)
        else:
            reply = self.replies.popleft() if self.replies else self.default
        self.requests.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.hold and not self._closing:
                gate = asyncio.Event()
                self._held.append(gate)
                await self._notify()
                await gate.wait()
            else:
                await self._notify()
            if reply.delay and not self._closing:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
        finally:
            self.in_flight -= 1
            await self._notify()

    @property
    def held(self) -> int:
        return len(self._held)

    def release(self, count: int | None = None) -> None:
        """Answer the `count` oldest held requests (all when None)."""
        for _ in range(len(self._held) if count is None else count):
            self._held.popleft().set()

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"receiver: {what or 'condition'} not met in {within}s; got {len(self.requests)} requests, "
                f"{self.in_flight} in flight"
            ) from None

    async def wait_for(self, count: int, within: float = 5.0) -> list[Received]:
        """The first `count` requests, once they have arrived."""
        await self.wait_until(lambda: len(self.requests) >= count, within, f"{count} requests")
        return self.requests[:count]

    async def wait_held(self, count: int, within: float = 5.0) -> None:
        await self.wait_until(lambda: len(self._held) >= count, within, f"{count} held requests")


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float = WAIT, what: str = "") -> T:
    """Re-check (each check is a store read, which yields to the loop) until it answers something truthy."""
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"not met in {within}s: {what or check}; last answer {last!r}") from None


async def settle(server: EventBusServer) -> None:
    """A barrier: return once the server can do nothing more by itself, so that a following "nothing was sent" or
    "this was recorded" check means something on every backend: no backfill is pending, the dispatcher's loop and
    every pump wait for a wake-up that has not come, and no lease, record or release is under way (a send a test
    receiver holds is the receiver's). Seen twice in a row, a store read apart. It never sleeps; it fails after
    WAIT seconds of real time."""
    dispatcher = server.dispatcher
    calm = 0
    try:
        async with asyncio.timeout(WAIT):
            while calm < 2:
                for _ in range(5):
                    await asyncio.sleep(0)
                backfilling = await server.store.pending_backfills()
                held = sum(r.in_flight for r in list(_RECEIVERS) if not r.closing)
                calm = calm + 1 if not backfilling and dispatcher.quiet(held_elsewhere=held) else 0
    except TimeoutError:
        raise AssertionError(f"the server did not settle in {WAIT}s") from None


async def create_endpoint(
    server: EventBusServer,
    receiver: Receiver | str,
    *,
    patterns: Sequence[str] = ("order.*",),
    options: dict[str, object] | None = None,
    **settings: Any,
) -> SubscriptionInfo:
    url = receiver if isinstance(receiver, str) else receiver.url
    return await server.services.subscriptions.create(
        SubscriptionInput(patterns=list(patterns), options={"url": url, **(options or {})}, **settings)
    )


def order(n: int | str = 0, *, type: str = "order.paid", **attributes: Any) -> Event:
    data = attributes.pop("data", {"n": n})
    return Event.create(type=type, source="/shop", data=data, **attributes)


async def publish(server: EventBusServer, *events: Event) -> list[PublishResult]:
    return await server.bus.publish(list(events or [order()]))


async def deliveries_of(server: EventBusServer, subscription_id: str) -> list[DeliveryRecord]:
    found, _ = await server.services.deliveries.list_page(subscription_id=subscription_id)
    return found


async def delivery_of(server: EventBusServer, subscription_id: str, event_id: str) -> DeliveryRecord:
    [found] = [d for d in await deliveries_of(server, subscription_id) if d.event_id == event_id]
    return found


async def wait_attempts(
    server: EventBusServer, delivery_id: str, count: int, *, within: float = WAIT
) -> tuple[DeliveryRecord, list[Attempt]]:
    """The delivery once `count` attempts are recorded (each is recorded with its settlement, atomically)."""

    async def check() -> tuple[DeliveryRecord, list[Attempt]] | None:
        _, attempts = await server.services.deliveries.get(delivery_id)
        if len(attempts) < count:
            return None
        return await server.services.deliveries.get(delivery_id)  # the record read after the attempt it settled

    return await eventually(check, within=within, what=f"{count} attempts of {delivery_id}")


async def wait_state(server: EventBusServer, delivery_id: str, state: str, *, within: float = WAIT) -> DeliveryRecord:
    async def check() -> DeliveryRecord | None:
        record, _ = await server.services.deliveries.get(delivery_id)
        return record if record.state == state else None

    return await eventually(check, within=within, what=f"{delivery_id} {state}")


async def subscription(server: EventBusServer, subscription_id: str) -> Subscription:
    return await server.services.subscriptions.find(subscription_id)


async def wait_subscription(
    server: EventBusServer, subscription_id: str, predicate: Callable[[Subscription], bool], what: str = ""
) -> Subscription:
    async def check() -> Subscription | None:
        found = await subscription(server, subscription_id)
        return found if predicate(found) else None

    return await eventually(check, what=what or f"subscription {subscription_id}")


def advance_to(clock: ManualClock, moment: datetime) -> None:
    """Move the clock exactly to `moment` (never backwards)."""
    clock.advance(max(moment - clock.now(), timedelta(0)))


async def system_events(server: EventBusServer, subscription_id: str | None = None) -> list[tuple[str, Any]]:
    """(type, data) of the `eventbus.*` events in the log, oldest first, optionally about one subscription."""
    found, _ = await server.bus.list_events(patterns=["eventbus.**"], page_size=1000)
    events = [(s.event.type, s.event.json_data()) for s in found]
    return [(t, d) for t, d in events if subscription_id is None or d.get("subscription_id") == subscription_id]


MakeReceiver = Callable[[], Awaitable[Receiver]]


async def open_circuit(server: EventBusServer, hook: Receiver, endpoint: SubscriptionInfo) -> None:
    """Five events, five failures in a row (the default threshold): the circuit opens."""
    hook.default = Reply(500)
    await publish(server, *(order(n) for n in range(5)))
    await hook.wait_for(5)
    opened = await wait_subscription(server, endpoint.subscription.id, lambda s: s.health.circuit == "open")
    assert opened.health.consecutive_failures == 5
