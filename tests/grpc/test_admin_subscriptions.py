"""Admin over gRPC for subscriptions and deliveries: every call through the real server and the Python client."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import pytest
from aiohttp import web

from eventbus.client import EventBusClient
from eventbus.client_values import DeliveryStatus
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnauthenticatedError
from eventbus.model import format_rfc3339
from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret
from eventbus.store.base import DEFAULT_RETRY_SCHEDULE
from eventbus.v1 import admin_pb2, admin_pb2_grpc

from .helpers import WAIT, Consumer, event, violations

T = TypeVar("T")
URL = "http://127.0.0.1:9/hook"  # allowlisted below; nothing listens there (these tests never deliver to it)
UNKNOWN_SUB = "sub_01JZZZZZZZZZZZZZZZZZZZZZZZ"
UNKNOWN_DLV = "dlv_01JZZZZZZZZZZZZZZZZZZZZZZZ"
API_KEY = "ebk_test_adminadminadmin"


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, allow_destinations=(ipaddress.ip_network("127.0.0.1/32"),))


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Re-read (each read is a gRPC round trip) until the answer is truthy, within WAIT seconds."""
    try:
        async with asyncio.timeout(WAIT):
            while not (found := await check()):
                await asyncio.sleep(0)
            return found
    except TimeoutError:
        raise AssertionError(f"not met in {WAIT}s: {what}") from None


async def test_create_an_endpoint_with_a_generated_secret(client: EventBusClient, clock: ManualClock) -> None:
    created = await client.create_subscription(options={"url": URL})
    assert created.id.startswith("sub_")
    assert created.secret is not None and created.secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(created.secret.removeprefix("whsec_"))) <= 64
    assert (created.kind, created.patterns, created.filter, created.state) == ("webhook", ("**",), None, "active")
    assert created.options == {"url": URL, "headers": {}, "format": "standard", "timeout": 15}
    assert created.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert (created.max_pending_age, created.ordering) == (timedelta(days=3), "none")
    assert (created.rate_limit, created.max_concurrency, created.state_reason) == (None, None, None)
    assert created.created_at == clock.now()
    assert (created.health.circuit, created.health.consecutive_failures, created.health.failing_since) == (
        "closed",
        0,
        None,
    )
    assert (created.stats.pending, created.stats.dead, created.stats.oldest_pending_age) == (0, 0, None)

    shown = await client.get_subscription(created.id)
    assert shown.secret is None and shown.revealed == {}  # shown once
    assert dataclasses.replace(shown, revealed=created.revealed) == created


async def test_create_keeps_what_is_given(client: EventBusClient) -> None:
    secret = generate_secret(24)
    created = await client.create_subscription(
        "webhook",
        patterns=["order.*", "invoice.**"],
        filter='{"data.amount": {"$gte": 100}}',
        options={
            "url": URL,
            "secret": secret,
            "headers": {"X-Team": "billing"},
            "format": "cloudevents-structured",
            "timeout": 5,
            "ed25519": True,
        },
        retry_schedule=[timedelta(seconds=1), timedelta(minutes=2)],
        rate_limit=2.5,
        max_concurrency=3,
        max_pending_age=timedelta(hours=1),
        ordering="subject",
        paused=True,
    )
    assert created.secret == secret
    assert created.revealed["public_key"].startswith("whpk_")
    assert created.options["public_key"] == created.revealed["public_key"]
    assert created.options["headers"] == {"x-team": "billing"}
    assert (created.options["format"], created.options["timeout"]) == ("cloudevents-structured", 5)
    assert created.patterns == ("invoice.**", "order.*")
    assert created.filter == '{"data.amount":{"$gte":100}}'
    assert created.retry_schedule == (timedelta(seconds=1), timedelta(minutes=2))
    assert (created.rate_limit, created.max_concurrency) == (2.5, 3)
    assert (created.max_pending_age, created.ordering, created.state) == (timedelta(hours=1), "subject", "paused")

    no_retries = await client.create_subscription(options={"url": URL}, retry_schedule=[])
    assert no_retries.retry_schedule == ()


def _options(**extra: object) -> dict[str, object]:
    return {"url": URL, **extra}


BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("ftp", {"options": {"url": "ftp://example.com/hook"}}, "options.url"),
    ("not-http", {"options": {"url": "file:///etc/passwd"}}, "options.url"),
    ("credentials", {"options": {"url": "https://user:pw@example.com/hook"}}, "options.url"),
    ("private", {"options": {"url": "http://10.0.0.1/hook"}}, "options.url"),
    ("no-url", {"options": {"format": "raw"}}, "options.url"),
    ("pattern", {"patterns": ["order..paid"], "options": _options()}, "patterns[0]"),
    ("filter-json", {"filter": "{nope", "options": _options()}, "filter"),
    ("secret", {"options": _options(secret="whsec_c2hvcnQ=")}, "options.secret"),
    ("not-whsec", {"options": _options(secret="s3cret")}, "options.secret"),
    ("reserved-header", {"options": _options(headers={"webhook-id": "x"})}, "options.headers.webhook-id"),
    ("header-crlf", {"options": _options(headers={"x-a": "a\r\nb"})}, "options.headers.x-a"),
    ("timeout-0", {"options": _options(timeout=0)}, "options.timeout"),
    ("timeout-61", {"options": _options(timeout=61)}, "options.timeout"),
    ("format", {"options": _options(format="xml")}, "options.format"),
    ("unknown-option", {"options": _options(colour="red")}, "options.colour"),
    ("rate-limit", {"rate_limit": -1, "options": _options()}, "rate_limit"),
    ("max-concurrency", {"max_concurrency": 1001, "options": _options()}, "max_concurrency"),
    ("negative-concurrency", {"max_concurrency": -1, "options": _options()}, "max_concurrency"),
    ("ordering", {"ordering": "fifo", "options": _options()}, "ordering"),
    ("schedule", {"retry_schedule": [timedelta(seconds=0)], "options": _options()}, "retry_schedule[0]"),
    ("max-pending-age", {"max_pending_age": timedelta(seconds=1), "options": _options()}, "max_pending_age"),
    ("kind", {"kind": "carrier-pigeon", "options": _options()}, "kind"),
    ("grpc-kind", {"kind": "grpc", "options": _options()}, "kind"),
]


@pytest.mark.parametrize(("arguments", "field"), [(a, f) for _, a, f in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS])
async def test_bad_inputs_name_the_field(client: EventBusClient, arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_subscription(**arguments)
    assert [v.field for v in caught.value.violations] == [field]
    assert (await client.list_subscriptions())[0] == []  # nothing was created


async def test_invalid_argument_on_the_wire(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    request = admin_pb2.CreateSubscriptionRequest(kind="webhook")
    request.options.update({"url": "http://10.0.0.1/hook"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.CreateSubscription(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == ["options.url"]
    for call, since_request in (
        (admin_stub.RecoverSubscription, admin_pb2.RecoverSubscriptionRequest(id=UNKNOWN_SUB)),
        (admin_stub.Replay, admin_pb2.ReplayRequest(subscription_id=UNKNOWN_SUB)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(since_request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(violations(caught.value)) == ["since"]


async def test_unknown_ids_are_not_found(client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub) -> None:
    since = (await client.create_subscription(options={"url": URL})).created_at
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.get_subscription(UNKNOWN_SUB),
        lambda: client.get_subscription("not-an-id"),
        lambda: client.update_subscription(UNKNOWN_SUB, rate_limit=1),
        lambda: client.delete_subscription(UNKNOWN_SUB),
        lambda: client.pause_subscription(UNKNOWN_SUB),
        lambda: client.resume_subscription(UNKNOWN_SUB),
        lambda: client.rotate_secret(UNKNOWN_SUB),
        lambda: client.recover(UNKNOWN_SUB, since=since),
        lambda: client.replay(UNKNOWN_SUB, since=since),
        lambda: client.get_delivery(UNKNOWN_DLV),
        lambda: client.resend_delivery(UNKNOWN_DLV),
        lambda: client.explain(UNKNOWN_SUB, "evt_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            await call()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.GetSubscription(admin_pb2.GetSubscriptionRequest(id=UNKNOWN_SUB))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages_and_kinds(client: EventBusClient) -> None:
    ids = [(await client.create_subscription(options={"url": f"{URL}/{i}"})).id for i in range(5)]
    async with Consumer(client.subscribe("a-group")):  # a consumer group is not listed here
        pass
    seen, token, pages = [], "", 0
    while True:
        page, token = await client.list_subscriptions(page_size=2, page_token=token)
        pages += 1
        seen.extend(page)
        if not token:
            break
    assert pages == 3
    assert [s.id for s in seen] == ids
    assert [s.options["url"] for s in seen] == [f"{URL}/{i}" for i in range(5)]
    assert all(s.revealed == {} for s in seen)
    assert [s.id for s in (await client.list_subscriptions(kind="webhook"))[0]] == ids
    with pytest.raises(InvalidArgumentError) as caught:
        await client.list_subscriptions(kind="grpc")
    assert [v.field for v in caught.value.violations] == ["kind"]
    with pytest.raises(InvalidArgumentError):
        await client.list_subscriptions(page_token="garbage")


async def test_list_pages_past_consumer_groups(client: EventBusClient) -> None:
    first = await client.create_subscription(options={"url": URL})
    async with Consumer(client.subscribe("between")):
        pass
    rest = [(await client.create_subscription(options={"url": URL})).id for _ in range(2)]
    seen, token = [], ""
    while True:
        page, token = await client.list_subscriptions(page_size=2, page_token=token)
        seen.extend(s.id for s in page)
        if not token:
            break
    assert seen == [first.id, *rest]


async def test_pause_resume_and_delete(client: EventBusClient) -> None:
    created = await client.create_subscription(options={"url": URL}, paused=True)
    assert created.state == "paused"
    resumed = await client.resume_subscription(created.id)
    assert (resumed.state, resumed.state_reason) == ("active", None)
    paused = await client.pause_subscription(created.id)
    assert paused.state == "paused"
    assert paused.state_reason == "paused by an operator"
    assert (await client.get_subscription(created.id)).state == "paused"
    assert (await client.resume_subscription(created.id)).state == "active"

    await client.delete_subscription(created.id)
    with pytest.raises(NotFoundError):
        await client.get_subscription(created.id)
    assert (await client.list_subscriptions())[0] == []


async def test_rotate_secret(client: EventBusClient, clock: ManualClock) -> None:
    created = await client.create_subscription(options={"url": URL})
    clock.advance(60)
    rotated = await client.rotate_secret(created.id)
    assert rotated.secret is not None and rotated.secret.startswith("whsec_")
    assert rotated.secret != created.secret
    shown = await client.get_subscription(created.id)
    assert shown.secret is None
    assert shown.options["previous_secret_expires_at"] == format_rfc3339(clock.now() + timedelta(hours=24))
    chosen = generate_secret()
    assert (await client.rotate_secret(created.id, chosen)).secret == chosen
    with pytest.raises(InvalidArgumentError) as caught:
        await client.rotate_secret(created.id, "whsec_tiny")
    assert [v.field for v in caught.value.violations] == ["secret"]


async def test_update_changes_only_what_is_given(client: EventBusClient, clock: ManualClock) -> None:
    created = await client.create_subscription(
        patterns=["order.*"], filter='{"subject": "a"}', options={"url": URL, "timeout": 5}, rate_limit=3
    )
    clock.advance(5)
    updated = await client.update_subscription(
        created.id, patterns=["invoice.*"], options={"url": f"{URL}/v2"}, max_concurrency=4
    )
    assert updated.patterns == ("invoice.*",)
    assert updated.options["url"] == f"{URL}/v2"
    assert updated.options["timeout"] == 5  # merged: the rest of the options stay
    assert (updated.filter, updated.rate_limit, updated.max_concurrency) == ('{"subject":"a"}', 3.0, 4)
    assert updated.revealed == {}  # no secret given: none shown
    assert updated.updated_at == clock.now()

    cleared = await client.update_subscription(created.id, filter="", rate_limit=0, retry_schedule=[])
    assert (cleared.filter, cleared.rate_limit, cleared.retry_schedule) == (None, None, ())
    assert cleared.patterns == ("invoice.*",)

    secret = generate_secret()
    assert (await client.update_subscription(created.id, options={"secret": secret})).secret == secret
    with pytest.raises(FailedPreconditionError):
        await client.update_subscription(created.id, ordering="subject")
    with pytest.raises(InvalidArgumentError) as caught:
        await client.update_subscription(created.id, options={"url": "http://10.0.0.1/"})
    assert [v.field for v in caught.value.violations] == ["options.url"]


async def test_explain_a_pattern_mismatch(client: EventBusClient) -> None:
    created = await client.create_subscription(patterns=["invoice.*"], options={"url": URL})
    [published] = await client.publish(event("order.paid", id="o-1"))
    explained = await client.explain(created.id, published.event_id)
    assert (explained.subscription_id, explained.event_id) == (created.id, published.event_id)
    assert explained.verdict == "not_matched"
    assert "order.paid" in explained.reasons[0] and "invoice.*" in explained.reasons[0]
    assert explained.delivery is None
    by_source = await client.explain(created.id, source="/shop", id="o-1")
    assert by_source == explained
    assert await client.list_deliveries(subscription_id=created.id) == ([], "")
    with pytest.raises(InvalidArgumentError):
        await client.explain(created.id)  # no event named


@dataclasses.dataclass
class Receiver:
    """A local webhook receiver: the bodies it was sent, as they come; it answers `status`."""

    url: str = ""
    status: int = 200
    bodies: asyncio.Queue[bytes] = dataclasses.field(default_factory=asyncio.Queue)

    async def next_body(self) -> bytes:
        return await asyncio.wait_for(self.bodies.get(), WAIT)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def hook(request: web.Request) -> web.Response:
        await found.bodies.put(await request.read())
        return web.Response(status=found.status, text="thanks", headers={"X-Receiver": "test"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_deliveries_attempts_resend_recover_and_replay(
    client: EventBusClient, receiver: Receiver, clock: ManualClock
) -> None:
    endpoint = await client.create_subscription(patterns=["order.*"], options={"url": receiver.url})
    [published] = await client.publish(event("order.paid", id="d-1", data={"n": 1}))
    assert b'"n":1' in (await receiver.next_body()).replace(b" ", b"")

    async def succeeded() -> DeliveryStatus | None:
        page, _ = await client.list_deliveries(subscription_id=endpoint.id, state="succeeded")
        return page[0] if page else None

    listed = await eventually(succeeded, "the delivery succeeded")
    assert (listed.event_id, listed.attempt_count, listed.attempts) == (published.event_id, 1, ())
    assert (await client.list_deliveries(event_id=published.event_id))[0] == [listed]
    assert (await client.list_deliveries(source="/shop", id="d-1"))[0] == [listed]
    assert (await client.list_deliveries(state="dead"))[0] == []

    shown = await client.get_delivery(listed.delivery_id)
    [attempt] = shown.attempts
    assert (attempt.number, attempt.status_code, attempt.outcome, attempt.error_class) == (1, 200, "succeeded", None)
    assert attempt.response_body == b"thanks"
    assert ("X-Receiver", "test") in attempt.response_headers
    assert attempt.started_at == clock.now() and attempt.next_attempt_at is None

    why = await client.explain(endpoint.id, published.event_id)
    assert why.verdict == "succeeded"
    assert why.delivery is not None and [a.number for a in why.delivery.attempts] == [1]

    resent = await client.resend_delivery(listed.delivery_id)
    assert resent.delivery_id == listed.delivery_id
    await receiver.next_body()
    again = await eventually(lambda: _with_attempts(client, listed.delivery_id, 2), "the resend's attempt is recorded")
    assert again.attempts[1].manual and again.state == "succeeded"

    assert await client.recover(endpoint.id, since=clock.now() - timedelta(hours=1)) == 0  # nothing dead
    with pytest.raises(InvalidArgumentError):
        await client.recover(endpoint.id, since=clock.now() + timedelta(hours=1))
    upto = await client.replay(endpoint.id, since=clock.now() - timedelta(hours=1))
    assert upto >= published.seq
    await receiver.next_body()  # the replayed delivery, a new one
    page, _ = await client.list_deliveries(event_id=published.event_id)
    assert len(page) == 2


async def test_a_gone_endpoint_is_disabled_shown_with_its_reason_and_enabled_again(
    client: EventBusClient, receiver: Receiver
) -> None:
    receiver.status = 410
    endpoint = await client.create_subscription(options={"url": receiver.url})
    [published] = await client.publish(event("order.paid", id="g-1"))
    await receiver.next_body()

    async def disabled() -> object:
        return (await client.get_subscription(endpoint.id)).state == "disabled"

    await eventually(disabled, "the endpoint is disabled")
    shown = await client.get_subscription(endpoint.id)
    assert shown.state_reason is not None and "410" in shown.state_reason
    assert (shown.stats.dead, shown.stats.pending) == (1, 0)
    why = await client.explain(endpoint.id, published.event_id)
    assert why.verdict == "dead"
    assert why.delivery is not None and why.delivery.dead_reason == "gone"
    assert why.delivery.attempts[0].status_code == 410

    enabled = await client.resume_subscription(endpoint.id)
    assert (enabled.state, enabled.state_reason) == ("active", None)


async def _with_attempts(client: EventBusClient, delivery_id: str, count: int) -> DeliveryStatus | None:
    shown = await client.get_delivery(delivery_id)
    return shown if len(shown.attempts) >= count and shown.state == "succeeded" else None


class TestWithAnApiKey:
    @pytest.fixture
    def server_settings(self, server_settings: ServerSettings) -> ServerSettings:
        return dataclasses.replace(server_settings, api_key=API_KEY)

    async def test_calls_without_the_key_are_unauthenticated(self, server: EventBusServer) -> None:
        assert server.addresses is not None
        address = str(server.addresses.grpc)
        async with EventBusClient(address, timeout=10) as anonymous:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: anonymous.create_subscription(options={"url": URL}),
                lambda: anonymous.list_subscriptions(),
                lambda: anonymous.get_subscription(UNKNOWN_SUB),
                lambda: anonymous.list_deliveries(),
                lambda: anonymous.get_delivery(UNKNOWN_DLV),
                lambda: anonymous.explain(UNKNOWN_SUB, "evt_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
            ]
            for call in calls:
                with pytest.raises(UnauthenticatedError):
                    await call()
        async with EventBusClient(address, api_key=API_KEY, timeout=10) as admin:
            created = await admin.create_subscription(options={"url": URL})
            assert [s.id for s in (await admin.list_subscriptions())[0]] == [created.id]
