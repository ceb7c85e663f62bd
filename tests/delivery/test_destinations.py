"""Plugin destinations (DESIGN.md §6) through the webhook machinery: a scripted destination registered by a plugin
module, subscriptions of its kind, and what each answer (success, retry, reject, a crash, no HTTP answer, a hang)
does to the delivery, its attempts, the circuit, the system events and the destination's persistent state."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

import pytest

from eventbus.bus.deliveries import EventRef
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.clock import ManualClock
from eventbus.errors import InvalidArgumentError
from eventbus.plugin import (
    Delivery,
    DestinationContext,
    DestinationRegistry,
    DestinationResult,
    Plugins,
    hookimpl,
    load_plugins,
)
from eventbus.plugin.destinations import RateLimit
from eventbus.runtime import EventBusServer
from tests.delivery.conftest import Servers
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    advance_to,
    delivery_of,
    order,
    publish,
    settle,
    system_events,
    wait_attempts,
    wait_state,
    wait_subscription,
)

Step = Callable[[Delivery, DestinationContext], Awaitable[DestinationResult]]


async def _succeed(delivery: Delivery, context: DestinationContext) -> DestinationResult:
    return DestinationResult.success(status_code=200)


@dataclass
class Scripted:
    """A destination whose answers the test scripts; it records what each call received."""

    name: str = "scripted"
    secret_options: frozenset[str] = frozenset({"token"})
    timeout: float = 1.0
    default_max_concurrency: int = 2
    script: deque[Step] = field(default_factory=deque)
    default: Step = _succeed
    calls: list[tuple[Delivery, dict[str, object]]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        unknown = sorted(set(options) - {"account", "token", "rate"})
        if unknown:
            raise InvalidArgumentError.for_field(f"options.{unknown[0]}", "unknown option")
        if not isinstance(options.get("account"), str):
            raise InvalidArgumentError.for_field("options.account", "the account name is required")
        return dict(options)

    def rate_limit(self, options: Mapping[str, object]) -> RateLimit | None:
        rate = options.get("rate")
        return RateLimit(str(options["account"]), float(str(rate))) if rate is not None else None

    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        self.calls.append((delivery, dict(context.options)))
        self.called.set()
        step = self.script.popleft() if self.script else self.default
        return await step(delivery, context)

    async def wait_calls(self, count: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while len(self.calls) < count:
                self.called.clear()
                await self.called.wait()


def plugin_with(destination: Scripted) -> Plugins:
    module = ModuleType("scripted_destination_plugin")

    @hookimpl
    def eventbus_register_destinations(registry: DestinationRegistry) -> None:
        registry.add(destination)

    module.eventbus_register_destinations = eventbus_register_destinations  # type: ignore[attr-defined]
    sys.modules.setdefault(module.__name__, module)
    return load_plugins(extra=[module], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})


@pytest.fixture
def scripted() -> Scripted:
    return Scripted()


@pytest.fixture
async def server(servers: Servers, scripted: Scripted) -> EventBusServer:
    return await servers.start(plugins=plugin_with(scripted))


async def subscribe(server: EventBusServer, **options: object) -> str:
    info = await server.services.subscriptions.create(
        SubscriptionInput(kind="scripted", patterns=["order.*"], options={"account": "acme", **options})
    )
    return info.subscription.id


async def test_options_are_validated_by_the_destination_and_secrets_never_shown(server: EventBusServer) -> None:
    subscriptions = server.services.subscriptions
    with pytest.raises(InvalidArgumentError) as missing:
        await subscriptions.create(SubscriptionInput(kind="scripted", options={}))
    assert missing.value.violations[0].field == "options.account"
    with pytest.raises(InvalidArgumentError) as unknown_kind:
        await subscriptions.create(SubscriptionInput(kind="nope", options={}))
    assert unknown_kind.value.violations[0].field == "kind"
    assert "scripted" in unknown_kind.value.message

    info = await subscriptions.create(
        SubscriptionInput(kind="scripted", options={"account": "acme", "token": "tok-0123456789abcdef"})
    )
    assert info.options == {"account": "acme", "token": "***"}  # nothing of it, however long
    assert "cdef" not in repr(info.options)
    # An update that does not repeat the credential keeps it; one that gives a new one replaces it.
    kept = await subscriptions.update(info.subscription.id, SubscriptionInput(options={"account": "acme-2"}))
    assert kept.options == {"account": "acme-2", "token": "***"}
    assert kept.subscription.secrets == {"token": "tok-0123456789abcdef"}
    replaced = await subscriptions.update(
        info.subscription.id, SubscriptionInput(options={"account": "acme-2", "token": "new-token-99998888"})
    )
    assert replaced.options["token"] == "***"
    assert replaced.subscription.secrets == {"token": "new-token-99998888"}
    listed = await subscriptions.info(await subscriptions.find(info.subscription.id))
    assert listed.options["token"] == "***"


async def test_a_success_is_recorded_as_an_attempt_with_what_the_destination_got(
    server: EventBusServer, scripted: Scripted
) -> None:
    sub = await subscribe(server, token="secret-token-value")
    [published] = await publish(server, order(7))
    delivery = await delivery_of(server, sub, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert record.state == "succeeded"
    assert (attempt.outcome, attempt.status_code) == ("succeeded", 200)
    [(handed, options)] = scripted.calls
    assert handed.event.event_id == published.event_id
    assert (handed.delivery_id, handed.subscription_id, handed.attempt) == (delivery.delivery_id, sub, 1)
    assert options == {"account": "acme", "token": "secret-token-value"}  # secrets reach the destination


async def test_retry_follows_the_schedule_and_honours_the_delay_asked(
    server: EventBusServer, scripted: Scripted, clock: ManualClock
) -> None:
    async def later(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        return DestinationResult.retry("busy", delay=timedelta(minutes=10), status_code=503, error_class="server")

    scripted.script.append(later)
    sub = await subscribe(server)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (record.state, attempt.outcome, attempt.error, attempt.error_class) == ("pending", "retry", "busy", "server")
    assert attempt.next_attempt_at is not None
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(minutes=10)
    advance_to(clock, attempt.next_attempt_at)
    record, attempts = await wait_attempts(server, delivery.delivery_id, 2)
    assert record.state == "succeeded"
    assert [a.number for a in attempts] == [1, 2]
    assert scripted.calls[1][0].attempt == 2


async def test_reject_ends_dead_rejected_with_the_reason_and_the_subscription_stays_healthy(
    server: EventBusServer, scripted: Scripted
) -> None:
    async def reject(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        return DestinationResult.reject("email is invalid", status_code=400, error_class="validation")

    scripted.default = reject
    sub = await subscribe(server)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub, published.event_id)
    record = await wait_state(server, delivery.delivery_id, "dead")
    assert (record.dead_reason, record.last_error) == ("rejected", "email is invalid")
    _, [attempt] = await server.services.deliveries.get(delivery.delivery_id)
    assert (attempt.outcome, attempt.status_code, attempt.error_class) == ("dead", 400, "validation")
    found = await server.services.subscriptions.find(sub)
    assert found.health.consecutive_failures == 0
    assert found.state == "active"


async def test_a_destination_that_raises_is_contained_retried_and_counted(
    server: EventBusServer, scripted: Scripted
) -> None:
    async def crash(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        raise RuntimeError("bug in the plugin")

    scripted.script.append(crash)
    sub = await subscribe(server)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (record.state, attempt.outcome, attempt.error_class) == ("pending", "retry", "plugin")
    assert attempt.error is not None and "bug in the plugin" in attempt.error
    assert server.plugins.failures == {"scripted_destination_plugin": 1}


async def test_no_http_answer_from_context_request_is_a_retry_with_its_class_not_a_plugin_failure(
    server: EventBusServer, scripted: Scripted, receiver: MakeReceiver
) -> None:
    closed = await receiver()
    url = closed.url
    await closed.close()  # nothing listens there any more

    async def post(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        response = await context.request("POST", url, json_body={"id": delivery.event.event_id})
        return DestinationResult.success(response=response)

    async def refused(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        # 127.0.0.2 is loopback but not in the allowlist (127.0.0.1/32): the guard refuses the connect.
        response = await context.request("POST", url.replace("127.0.0.1", "127.0.0.2"), body=b"x")
        return DestinationResult.success(response=response)

    scripted.script.extend([post, refused])
    sub = await subscribe(server)
    first, second = await publish(server, order(1), order(2))
    one = await delivery_of(server, sub, first.event_id)
    two = await delivery_of(server, sub, second.event_id)
    _, [attempt] = await wait_attempts(server, one.delivery_id, 1)
    assert (attempt.outcome, attempt.error_class) == ("retry", "connect")
    _, [attempt] = await wait_attempts(server, two.delivery_id, 1)
    assert (attempt.outcome, attempt.error_class) == ("retry", "ssrf")
    assert server.plugins.failures == {}


async def test_context_request_reaches_a_receiver_and_the_answer_is_logged(
    server: EventBusServer, scripted: Scripted, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    hook.default = Reply(201, body=b'{"event_uuid": "5408c5a3"}')

    async def post(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        response = await context.request("POST", hook.url, json_body={"n": delivery.event.event.json_data()["n"]})
        return DestinationResult.success(response=response)

    scripted.default = post
    sub = await subscribe(server)
    [published] = await publish(server, order(42))
    delivery = await delivery_of(server, sub, published.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (attempt.outcome, attempt.status_code, attempt.response_body) == (
        "succeeded",
        201,
        b'{"event_uuid": "5408c5a3"}',
    )
    [received] = await hook.wait_for(1)
    assert received.json() == {"n": 42}
    assert received.headers["content-type"] == "application/json"


async def test_a_destination_that_hangs_is_cut_off_at_its_timeout(server: EventBusServer, scripted: Scripted) -> None:
    async def hang(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scripted.script.append(hang)
    sub = await subscribe(server)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (record.state, attempt.error_class) == ("pending", "timeout")
    assert attempt.next_attempt_at is not None
    # A timeout waits at least 60 s, less the 20 % jitter.
    assert attempt.next_attempt_at - attempt.started_at >= timedelta(seconds=48)


async def test_an_alert_publishes_failing_at_the_first_failure(server: EventBusServer, scripted: Scripted) -> None:
    async def refused(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        return DestinationResult.retry("credentials refused", status_code=401, error_class="auth", alert=True)

    scripted.default = refused
    sub = await subscribe(server)
    await publish(server, order(1), order(2))
    await scripted.wait_calls(2)
    await settle(server)
    failing = [d for t, d in await system_events(server, sub) if t == "eventbus.endpoint.failing"]
    assert len(failing) == 1  # once per streak, not once per failure
    assert failing[0]["alert"] == "credentials refused"
    assert failing[0]["kind"] == "scripted"


async def test_the_circuit_opens_for_a_failing_destination_like_for_an_endpoint(
    server: EventBusServer, scripted: Scripted
) -> None:
    async def down(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        return DestinationResult.retry("down", status_code=500)

    scripted.default = down
    sub = await subscribe(server)
    await publish(server, *(order(n) for n in range(7)))
    opened = await wait_subscription(server, sub, lambda s: s.health.circuit == "open")
    assert opened.health.consecutive_failures >= 5
    await settle(server)
    # Failures are recorded before a slot frees: at most the threshold plus what was already in flight (2 slots).
    held_at = len(scripted.calls)
    assert 5 <= held_at <= 6
    await settle(server)
    assert len(scripted.calls) == held_at  # held once open
    assert "eventbus.endpoint.circuit_opened" in [t for t, _ in await system_events(server, sub)]


async def test_state_persists_across_a_restart_and_expires(
    servers: Servers, scripted: Scripted, clock: ManualClock
) -> None:
    async def count(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        seen = int(await context.state.get("count") or 0)
        await context.state.set("count", str(seen + 1))
        await context.state.set("short", "lived", ttl=timedelta(minutes=5))
        return DestinationResult.success()

    scripted.default = count
    first = await servers.start(plugins=plugin_with(scripted))
    sub = await subscribe(first)
    await publish(first, order(1))
    await scripted.wait_calls(1)
    [published] = await publish(first, order(2))
    await wait_state(first, (await delivery_of(first, sub, published.event_id)).delivery_id, "succeeded")
    await servers.stop(first)

    again = Scripted()
    seen: list[tuple[str | None, str | None]] = []

    async def read(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        seen.append((await context.state.get("count"), await context.state.get("short")))
        return DestinationResult.success()

    again.default = read
    clock.advance(timedelta(minutes=6))
    second = await servers.start(plugins=plugin_with(again))
    [published] = await publish(second, order(3))
    await wait_state(second, (await delivery_of(second, sub, published.event_id)).delivery_id, "succeeded")
    assert seen == [("2", None)]


async def test_state_refuses_oversized_values_and_too_many_keys(server: EventBusServer, scripted: Scripted) -> None:
    errors: list[str] = []

    async def fill(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        for bad in ("", "k" * 201):
            try:
                await context.state.set(bad, "v")
            except ValueError as exc:
                errors.append(str(exc))
        try:
            await context.state.set("big", "x" * (64 * 1024 + 1))
        except ValueError as exc:
            errors.append(str(exc))
        # At once, so the store commits them together (100 fsyncs one by one can outlast the 1 s attempt timeout).
        await asyncio.gather(*(context.state.set(f"k{n}", "v") for n in range(100)))
        try:
            await context.state.set("one-too-many", "v")
        except ValueError as exc:
            errors.append(str(exc))
        await context.state.set("k0", "replaced")  # an existing key can still change
        await context.state.delete("k1")
        await context.state.set("one-too-many", "fits now")
        return DestinationResult.success()

    scripted.default = fill
    sub = await subscribe(server)
    [published] = await publish(server, order())
    record = await wait_state(server, (await delivery_of(server, sub, published.event_id)).delivery_id, "succeeded")
    assert record.state == "succeeded"
    assert len(errors) == 4
    assert "100 keys" in errors[-1]


async def test_a_shared_rate_limit_holds_across_subscriptions_of_one_account(
    server: EventBusServer, scripted: Scripted, clock: ManualClock
) -> None:
    one = await subscribe(server, rate=1)
    two = await subscribe(server, rate=1)
    other = await subscribe(server, account="other-account")  # another account: not limited by acme's rate

    def sent_to_acme() -> int:
        return sum(1 for handed, _ in scripted.calls if handed.subscription_id in (one, two))

    await publish(server, *(order(n) for n in range(3)))  # 6 deliveries for acme, 3 for the other
    await scripted.wait_calls(4)  # the other account's 3, and acme's burst of 1
    await settle(server)
    assert sent_to_acme() == 1
    assert sum(1 for handed, _ in scripted.calls if handed.subscription_id == other) == 3
    for second in range(1, 6):  # each second of the clock lets exactly one more acme delivery go
        clock.advance(timedelta(seconds=1))
        await scripted.wait_calls(4 + second)
        await settle(server)
        assert sent_to_acme() == 1 + second


async def test_subscriptions_of_a_destination_kind_are_listed_explained_and_recovered(
    server: EventBusServer, scripted: Scripted, clock: ManualClock
) -> None:
    async def reject(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        return DestinationResult.reject("not now")

    scripted.script.append(reject)
    sub = await subscribe(server)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, sub, published.event_id)
    await wait_state(server, delivery.delivery_id, "dead")
    why = await server.services.deliveries.why(sub, EventRef(event_id=published.event_id))
    assert why.verdict == "dead"
    assert any("not now" in reason for reason in why.reasons), why.reasons
    recovered = await server.services.subscriptions.recover(sub, since=clock.now() - timedelta(hours=1))
    assert recovered == 1
    await wait_state(server, delivery.delivery_id, "succeeded")
    page = await server.services.subscriptions.list_page(kind="scripted")
    assert [s.subscription.id for s in page[0]] == [sub]


async def test_a_shared_state_is_seen_by_every_subscription_naming_its_scope(
    server: EventBusServer, scripted: Scripted
) -> None:
    seen: dict[str, tuple[str | None, str | None]] = {}

    async def share(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        account = context.shared_state(f"acct-{context.options['account']}")
        before = await account.get("token")
        if before is None:
            await account.set("token", f"set-by-{context.subscription_id}")
        seen[context.subscription_id] = (before, await context.state.get("token"))
        return DestinationResult.success()

    scripted.default = share
    first = await subscribe(server)
    [published] = await publish(server, order(1))
    await wait_state(server, (await delivery_of(server, first, published.event_id)).delivery_id, "succeeded")
    second = await subscribe(server)  # the same account
    other = await subscribe(server, account="other")
    [published] = await publish(server, order(2))
    # `first` gets it too: done before it is deleted, or its send could still write the scope after the purge.
    for sub in (first, second, other):
        await wait_state(server, (await delivery_of(server, sub, published.event_id)).delivery_id, "succeeded")
    assert seen[second] == (f"set-by-{first}", None)  # the scope's value; its own state is apart
    assert seen[other][0] is None  # another scope

    # A scope's values stay while one subscription that used it is left, and go with the last one.
    store, now = server.store, server.bus.clock.now()
    await server.services.subscriptions.delete(first)
    await store.purge_deleted(limit=1000)
    assert await store.state_get("scripted/acct-acme", "token", now=now) == f"set-by-{first}"
    await server.services.subscriptions.delete(second)
    await store.purge_deleted(limit=1000)
    assert await store.state_get("scripted/acct-acme", "token", now=now) is None
    assert await store.state_get("scripted/acct-other", "token", now=now) is not None
    context = await _context_of(server, other)
    with pytest.raises(ValueError):
        context.shared_state("not a scope!")


async def _context_of(server: EventBusServer, subscription_id: str) -> DestinationContext:
    captured: list[DestinationContext] = []
    kind = server.kinds.find("scripted")
    assert kind is not None
    destination: Any = kind.destination

    async def grab(delivery: Delivery, context: DestinationContext) -> DestinationResult:
        captured.append(context)
        return DestinationResult.success()

    destination.script.append(grab)
    [published] = await publish(server, order(3))
    await wait_state(server, (await delivery_of(server, subscription_id, published.event_id)).delivery_id, "succeeded")
    return captured[0]


async def test_subscriptions_sharing_a_key_with_different_rates_get_the_lowest(
    server: EventBusServer, scripted: Scripted, clock: ManualClock
) -> None:
    fast = await subscribe(server, rate=1)
    slow = await subscribe(server, rate=0.5)
    await publish(server, *(order(n) for n in range(5)))  # 10 deliveries on one key
    await scripted.wait_calls(1)
    await settle(server)
    assert len(scripted.calls) == 1  # one burst token, whoever took it: a rate change never refills the bucket
    clock.advance(timedelta(seconds=1))
    await settle(server)
    assert len(scripted.calls) == 1  # 0.5 per second: half a token
    clock.advance(timedelta(seconds=1))
    await scripted.wait_calls(2)
    await settle(server)
    assert len(scripted.calls) == 2
    assert {handed.subscription_id for handed, _ in scripted.calls} <= {fast, slow}
