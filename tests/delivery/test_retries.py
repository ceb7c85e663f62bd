"""The retry rules of DESIGN.md §3 under the injected clock: the default schedule, the 60 s floor after a 429 or a
timeout, Retry-After (seconds and HTTP date), 3xx as a failure, and 410 Gone."""

from __future__ import annotations

import email.utils
from datetime import timedelta

import pytest

from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import (
    MakeReceiver,
    Reply,
    advance_to,
    create_endpoint,
    deliveries_of,
    delivery_of,
    order,
    publish,
    settle,
    subscription,
    system_events,
    wait_attempts,
)

DEFAULT_DELAYS = [timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)]


def within_jitter(delay: timedelta, nominal: timedelta) -> bool:
    return nominal * 0.8 - timedelta(milliseconds=1) <= delay <= nominal * 1.2 + timedelta(milliseconds=1)


async def test_default_schedule_is_eight_attempts_then_dead_exhausted(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock
) -> None:
    hook = await receiver()
    hook.default = Reply(500)
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)

    for number, nominal in enumerate(DEFAULT_DELAYS, start=1):
        record, attempts = await wait_attempts(server, delivery.delivery_id, number)
        last = attempts[-1]
        assert (last.number, last.status_code, last.outcome) == (number, 500, "retry")
        assert last.next_attempt_at is not None
        assert within_jitter(last.next_attempt_at - last.started_at, nominal), (number, last)
        assert record.state == "pending"
        assert record.next_attempt_at == last.next_attempt_at
        advance_to(clock, last.next_attempt_at)

    record, attempts = await wait_attempts(server, delivery.delivery_id, 8)
    assert record.state == "dead"
    assert record.dead_reason == "exhausted"
    assert record.attempts == 8
    assert [a.number for a in attempts] == list(range(1, 9))
    assert attempts[-1].outcome == "dead"
    assert attempts[-1].next_attempt_at is None
    requests = await hook.wait_for(8)
    assert {r.webhook_id for r in requests} == {published.event_id}
    clock.advance(timedelta(days=2))
    await settle(server)
    assert len(hook.requests) == 8


async def _first_retry_delay(server: EventBusServer, subscription_id: str, event_id: str) -> timedelta:
    delivery = await delivery_of(server, subscription_id, event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert attempt.outcome == "retry"
    assert attempt.next_attempt_at is not None
    return attempt.next_attempt_at - attempt.started_at


async def test_429_waits_at_least_60_seconds(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(429)
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())

    delay = await _first_retry_delay(server, endpoint.subscription.id, published.event_id)

    assert within_jitter(delay, timedelta(seconds=60))  # the 5 s schedule raised to the 60 s floor


async def test_timeout_waits_at_least_60_seconds(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(200, hold=True)
    endpoint = await create_endpoint(server, hook, options={"timeout": 1})
    [published] = await publish(server, order())

    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1, within=5)

    assert attempt.error_class == "timeout"
    assert attempt.status_code is None
    assert timedelta(seconds=0.9) <= attempt.duration < timedelta(seconds=3)
    assert attempt.next_attempt_at is not None
    assert within_jitter(attempt.next_attempt_at - attempt.started_at, timedelta(seconds=60))
    assert hook.held == 1


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        (3, 4.0, 6.0),  # below the 5 s schedule: clamp(3, 5, 10) = 5, then ±20 %
        (8, 8.0, 9.6),  # inside [d, 2d]: 8 s, then jitter, never below 8 s
        (1000, 1000.0, 1000.0),  # above 2d: clamped to 10 s, jittered, then raised to Retry-After (never below it)
    ],
)
async def test_retry_after_seconds_is_clamped_and_never_undercut(
    server: EventBusServer, receiver: MakeReceiver, retry_after: int, low: float, high: float
) -> None:
    hook = await receiver()
    hook.default = Reply(503, headers={"Retry-After": str(retry_after)})
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())

    delay = await _first_retry_delay(server, endpoint.subscription.id, published.event_id)

    assert low - 0.001 <= delay.total_seconds() <= high + 0.001
    assert delay >= timedelta(seconds=retry_after)


async def test_retry_after_http_date(server: EventBusServer, receiver: MakeReceiver, clock: ManualClock) -> None:
    hook = await receiver()
    moment = (clock.now() + timedelta(seconds=9)).replace(microsecond=0)
    hook.default = Reply(503, headers={"Retry-After": email.utils.format_datetime(moment, usegmt=True)})
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())

    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)

    assert attempt.next_attempt_at is not None
    wait = moment - attempt.started_at  # 8-9 s: inside [5 s, 10 s], so kept, jittered, never earlier than the date
    assert moment <= attempt.next_attempt_at <= attempt.started_at + wait * 1.2 + timedelta(milliseconds=1)


async def test_redirect_is_a_failure_and_is_not_followed(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(302, headers={"Location": f"http://127.0.0.1:{hook.port}/elsewhere"})
    endpoint = await create_endpoint(server, hook)
    [published] = await publish(server, order())

    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)

    assert (attempt.status_code, attempt.outcome) == (302, "retry")
    assert record.state == "pending"
    assert record.last_error == "HTTP 302"
    await settle(server)
    assert [r.path for r in hook.requests] == ["/hook"]


async def test_410_kills_the_delivery_and_disables_the_endpoint(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    hook.default = Reply(410)
    endpoint = await create_endpoint(server, hook)
    sub_id = endpoint.subscription.id
    [published] = await publish(server, order(1))

    delivery = await delivery_of(server, sub_id, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)

    assert (record.state, record.dead_reason) == ("dead", "gone")
    assert attempt.status_code == 410
    disabled = await subscription(server, sub_id)
    assert disabled.state == "disabled"
    assert disabled.state_reason is not None and "410" in disabled.state_reason
    assert ("eventbus.endpoint.disabled", sub_id) in [(t, d["subscription_id"]) for t, d in await system_events(server)]

    [later] = await publish(server, order(2))
    await settle(server)
    assert [d.event_id for d in await deliveries_of(server, sub_id)] == [published.event_id]
    assert len(hook.requests) == 1
    assert later.event_id not in {r.webhook_id for r in hook.requests}
