"""Store contract, push delivery: the attempt log, circuit and auto-disable, system events, subscription states,
ordering by subject, resend, recover and replay.

Every test speaks the `Store` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

from datetime import timedelta

from eventbus.bus.health import system_events
from eventbus.clock import ManualClock
from eventbus.store.base import (
    DeadReason,
    EventQuery,
    LeasedDelivery,
    Ordering,
    Settle,
    Settlement,
    Store,
    Subscription,
    SubscriptionSpec,
    SubscriptionState,
)
from eventbus.store.records import AttemptResult, DeliveryQuery, HealthChangeKind, HealthPolicy
from tests.store.support import LEASE_FOR, append, lease, order, subscribe

POLICY = HealthPolicy(failure_threshold=3, disable_after=timedelta(hours=10), warn_at=(0.5,))


def endpoint_spec(**overrides: object) -> SubscriptionSpec:
    values: dict[str, object] = {
        "kind": "webhook",
        "name": None,
        "patterns": ("order.*",),
        "retry_schedule": (timedelta(seconds=10),) * 5,
        "options": {"url": "https://example.com/hook"},
    }
    values.update(overrides)
    return SubscriptionSpec(**values)  # type: ignore[arg-type]


def failed(delivery: LeasedDelivery, clock: ManualClock, *, retry_in: float = 10, **extra: object) -> AttemptResult:
    settle = Settle(
        delivery.delivery_id,
        delivery.lease_token,
        Settlement.RETRY,
        retry_at=clock.now() + timedelta(seconds=retry_in),
        error="HTTP 500",
    )
    values: dict[str, object] = {
        "settle": settle,
        "number": delivery.attempt,
        "started_at": clock.now(),
        "duration": timedelta(milliseconds=3),
        "healthy": False,
        "status_code": 500,
        "response_headers": (("content-type", "text/plain"),),
        "response_body": b"boom",
        "probe": delivery.probe,
    }
    values.update(extra)
    return AttemptResult(**values)  # type: ignore[arg-type]


def succeeded(delivery: LeasedDelivery, clock: ManualClock) -> AttemptResult:
    settle = Settle(delivery.delivery_id, delivery.lease_token, Settlement.SUCCEEDED)
    return AttemptResult(settle, delivery.attempt, clock.now(), timedelta(milliseconds=1), True, status_code=200)


async def record(store: Store, clock: ManualClock, result: AttemptResult) -> tuple[bool, list[HealthChangeKind]]:
    applied, changes = await store.record_attempt(result, policy=POLICY, now=clock.now(), system_events=system_events)
    return applied, [c.kind for c in changes]


async def system_types(store: Store) -> list[str]:
    return [e.event.type for e in await store.list_events(EventQuery(limit=1000)) if e.event.source == "/eventbus"]


async def test_an_attempt_is_logged_with_its_settlement(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"))
    [delivery] = await lease(store, clock, subscription.id)
    assert await record(store, clock, failed(delivery, clock)) == (True, [])
    [attempt] = await store.list_attempts(delivery.delivery_id)
    assert (attempt.number, attempt.status_code, attempt.outcome) == (1, 500, "retry")
    assert attempt.response_body == b"boom"
    assert attempt.response_headers == (("content-type", "text/plain"),)
    assert attempt.next_attempt_at == clock.now() + timedelta(seconds=10)
    assert attempt.attempt_id.startswith("att_")
    record_ = await store.get_delivery(delivery.delivery_id)
    assert record_ is not None
    assert (record_.state, record_.attempts, record_.last_error) == ("pending", 1, "HTTP 500")


async def test_a_stale_lease_is_logged_but_changes_nothing(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"))
    [first] = await lease(store, clock, subscription.id)
    clock.advance(LEASE_FOR + timedelta(seconds=1))
    [second] = await lease(store, clock, subscription.id)
    assert await record(store, clock, succeeded(first, clock)) == (False, [])
    outcomes = [a.outcome for a in await store.list_attempts(first.delivery_id)]
    assert outcomes == ["lease_lost"]
    current = await store.get_delivery(second.delivery_id)
    assert current is not None and current.state == "leased"


async def test_consecutive_failures_open_the_circuit_and_it_holds_until_a_probe(
    store: Store, clock: ManualClock
) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, *(order(f"o-{n}") for n in range(6)))
    leased = await lease(store, clock, subscription.id, limit=3)
    kinds = [(await record(store, clock, failed(d, clock, retry_in=3600)))[1] for d in leased]
    assert kinds == [[], [], [HealthChangeKind.CIRCUIT_OPENED]]
    assert await lease(store, clock, subscription.id, limit=10) == []  # held: three more are due, none leased
    pending = await store.list_deliveries(DeliveryQuery(subscription_id=subscription.id, state="pending"))
    assert sorted(d.attempts for d in pending) == [0, 0, 0, 1, 1, 1]
    clock.advance(POLICY.probe_after)
    [probe] = await lease(store, clock, subscription.id, limit=10)
    assert probe.probe
    assert await lease(store, clock, subscription.id, limit=10) == []  # one probe at a time
    assert await record(store, clock, succeeded(probe, clock)) == (True, [HealthChangeKind.CIRCUIT_CLOSED])
    assert len(await lease(store, clock, subscription.id, limit=10)) == 2  # the held ones, released at once
    assert await system_types(store) == ["eventbus.endpoint.circuit_opened", "eventbus.endpoint.circuit_closed"]


async def test_a_failed_probe_backs_off(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, *(order(f"o-{n}") for n in range(5)))
    for delivery in await lease(store, clock, subscription.id, limit=3):
        await record(store, clock, failed(delivery, clock, retry_in=3600))
    clock.advance(POLICY.probe_after)
    [probe] = await lease(store, clock, subscription.id)
    await record(store, clock, failed(probe, clock, retry_in=3600))
    clock.advance(POLICY.probe_after)
    assert await lease(store, clock, subscription.id) == []  # the next probe waits twice as long
    clock.advance(POLICY.probe_after)
    assert len(await lease(store, clock, subscription.id)) == 1


async def test_failing_warns_then_disables_after_the_window(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(retry_schedule=(timedelta(hours=1),) * 20))
    await append(store, clock, order("a"))
    seen: list[HealthChangeKind] = []
    for _ in range(11):  # hourly failures: the 11th is 10 hours after the first
        delivery = (await lease(store, clock, subscription.id))[0]
        seen += (await record(store, clock, failed(delivery, clock, retry_in=3600)))[1]
        clock.advance(timedelta(hours=1))
    assert seen.count(HealthChangeKind.FAILING) == 1
    assert seen.index(HealthChangeKind.FAILING) < seen.index(HealthChangeKind.DISABLED)
    current = await store.get_subscription(subscription.id)
    assert current is not None and current.state == "disabled"
    assert current.state_reason is not None and "failing since" in current.state_reason
    await append(store, clock, order("b"))  # disabled: nothing is created for new events
    assert len(await store.list_deliveries(DeliveryQuery(subscription_id=subscription.id))) == 1
    assert "eventbus.endpoint.disabled" in await system_types(store)


async def test_gone_disables_with_the_reason_and_kills_the_delivery(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"))
    [delivery] = await lease(store, clock, subscription.id)
    settle = Settle(delivery.delivery_id, delivery.lease_token, Settlement.DEAD, reason=DeadReason.GONE)
    result = failed(delivery, clock, settle=settle, status_code=410, disable_reason="410 Gone")
    assert await record(store, clock, result) == (
        True,
        [HealthChangeKind.DISABLED, HealthChangeKind.DELIVERY_DEAD],
    )
    current = await store.get_subscription(subscription.id)
    assert current is not None and (current.state, current.state_reason) == ("disabled", "410 Gone")
    assert await system_types(store) == ["eventbus.endpoint.disabled", "eventbus.delivery.dead"]


async def test_system_events_reach_other_watchers_but_never_their_subject(store: Store, clock: ManualClock) -> None:
    watcher = await subscribe(store, clock, endpoint_spec(patterns=("eventbus.**",)))
    endpoint = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"))
    [delivery] = await lease(store, clock, endpoint.id)
    settle = Settle(delivery.delivery_id, delivery.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED)
    await record(store, clock, failed(delivery, clock, settle=settle))
    [told] = await lease(store, clock, watcher.id)
    assert told.event.event.type == "eventbus.delivery.dead"
    assert told.event.event.subject == endpoint.id
    # The watcher's own failure is about itself: it is not sent to it (and system events' deaths are not told).
    settle = Settle(told.delivery_id, told.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED)
    await record(store, clock, failed(told, clock, settle=settle))
    clock.advance(1)
    assert await lease(store, clock, watcher.id) == []


async def test_paused_creates_and_holds_disabled_creates_nothing(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(state=SubscriptionState.PAUSED))
    await append(store, clock, order("a"))
    assert await lease(store, clock, subscription.id) == []
    assert await store.due_subscriptions(["webhook"], now=clock.now()) == []
    await store.set_subscription_state(subscription.id, SubscriptionState.DISABLED, reason="test", now=clock.now())
    await append(store, clock, order("b"))
    assert len(await store.list_deliveries(DeliveryQuery(subscription_id=subscription.id))) == 1
    changes = await store.set_subscription_state(
        subscription.id, SubscriptionState.ACTIVE, reason=None, now=clock.now()
    )
    assert [c.kind for c in changes] == [HealthChangeKind.ENABLED]
    assert [s for s, _ in await store.due_subscriptions(["webhook"], now=clock.now())] == [subscription.id]
    assert len(await lease(store, clock, subscription.id)) == 1


async def test_ordering_by_subject_leases_only_the_head_of_each_subject(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(ordering=Ordering.SUBJECT))
    await append(store, clock, order("x1", subject="x"), order("x2", subject="x"), order("y1", subject="y"), order("n"))
    first = await lease(store, clock, subscription.id, limit=10)
    assert sorted(d.event.event.id for d in first) == ["n", "x1", "y1"]
    x1 = next(d for d in first if d.event.event.id == "x1")
    for other in first:
        if other is not x1:
            await record(store, clock, succeeded(other, clock))
    await record(store, clock, failed(x1, clock, retry_in=60))
    assert await lease(store, clock, subscription.id, limit=10) == []  # x2 waits behind the failing x1
    # ... and does not make the subscription look due before x1's retry
    assert await store.due_subscriptions(["webhook"], now=clock.now()) == [
        (subscription.id, clock.now() + timedelta(seconds=60))
    ]
    x2 = (await store.list_deliveries(DeliveryQuery(subscription_id=subscription.id, state="pending")))[-1]
    blocker = await store.ordering_blocker(x2)
    assert blocker is not None and blocker.delivery_id == x1.delivery_id
    clock.advance(60)
    [again] = await lease(store, clock, subscription.id, limit=10)
    settle = Settle(again.delivery_id, again.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED)
    await record(store, clock, failed(again, clock, settle=settle))
    [released] = await lease(store, clock, subscription.id, limit=10)  # a dead head releases the next
    assert released.event.event.id == "x2"


async def test_resend_recover_and_replay(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(retry_schedule=()))
    since = clock.now()
    await append(store, clock, order("a"), order("b"))
    for delivery in await lease(store, clock, subscription.id, limit=2):
        settle = Settle(delivery.delivery_id, delivery.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED)
        await record(store, clock, failed(delivery, clock, settle=settle))
    dead = await store.list_deliveries(DeliveryQuery(subscription_id=subscription.id, state="dead"))
    resent = await store.resend_delivery(dead[0].delivery_id, now=clock.now())
    assert (resent.state, resent.manual) == ("pending", True)
    [manual] = await lease(store, clock, subscription.id)  # past its attempts, but a resend gets one more
    assert manual.manual and manual.attempt == 2
    recovered = await store.recover_deliveries(
        subscription.id, since=since, include_pending=False, limit=10, now=clock.now()
    )
    assert [d for d, _ in recovered] == [dead[1].delivery_id]
    again = await store.get_delivery(dead[1].delivery_id)
    assert again is not None and (again.state, again.attempts) == ("pending", 0)
    late = await subscribe(store, clock, endpoint_spec(patterns=("**",)))
    assert await store.replay(late.id, patterns=["order.paid"], since=since, now=clock.now()) == await store.last_seq()
    while await store.backfill(late.id, now=clock.now(), limit=1):
        pass
    assert sorted(d.event.event.id for d in await lease(store, clock, late.id, limit=10)) == ["a", "b"]


async def test_settings_change_on_a_live_subscription(store: Store, clock: ManualClock) -> None:
    subscription: Subscription = await subscribe(store, clock, endpoint_spec())
    await store.update_subscription(
        subscription.id,
        {"patterns": ("invoice.*",), "rate_limit": 5.0, "options": {"url": "https://example.org/"}},
        now=clock.now(),
    )
    changed = await store.get_subscription(subscription.id)
    assert changed is not None
    assert (changed.patterns, changed.rate_limit, changed.options) == (
        ("invoice.*",),
        5.0,
        {"url": "https://example.org/"},
    )
    await append(store, clock, order("a"), order("i", type="invoice.paid"))
    assert [d.event.event.id for d in await lease(store, clock, changed.id, limit=5)] == ["i"]


async def test_retention_prunes_attempts(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"))
    [delivery] = await lease(store, clock, subscription.id)
    await record(store, clock, succeeded(delivery, clock))
    clock.advance(timedelta(days=8))
    while await store.prune(older_than=clock.now() - timedelta(days=7), limit=100):
        pass
    assert await store.list_attempts(delivery.delivery_id) == []


async def test_a_lease_given_back_unsent_does_not_count_as_an_attempt(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, order("a"), order("b"))
    first, second = await lease(store, clock, subscription.id, limit=2)
    await store.release_leases([(first.delivery_id, first.lease_token)], now=clock.now(), unsent=True)
    await store.release_leases([(second.delivery_id, second.lease_token)], now=clock.now())
    attempts = {d.delivery_id: d.attempts for d in await store.list_deliveries(DeliveryQuery())}
    assert (attempts[first.delivery_id], attempts[second.delivery_id]) == (0, 1)


async def test_only_a_failed_probe_backs_the_next_probe_off(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec())
    await append(store, clock, *(order(f"o-{n}") for n in range(6)))
    leased = await lease(store, clock, subscription.id, limit=5)
    for delivery in leased:  # 3 open the circuit, 2 more were in flight and fail after it opened
        await record(store, clock, failed(delivery, clock, retry_in=3600))
    clock.advance(POLICY.probe_after)
    assert len(await lease(store, clock, subscription.id)) == 1  # still the first probe's time


async def test_a_failure_after_a_quiet_spell_starts_a_new_streak(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(retry_schedule=(timedelta(days=2),) * 5))
    await append(store, clock, order("a"))
    [delivery] = await lease(store, clock, subscription.id)
    await record(store, clock, failed(delivery, clock, retry_in=2 * 86400))
    clock.advance(timedelta(days=2))  # longer than the failing gap (24 h) and than the disable window (10 h)
    [again] = await lease(store, clock, subscription.id)
    assert (await record(store, clock, failed(again, clock)))[1] == []  # no warning, no disable: a new streak
    current = await store.get_subscription(subscription.id)
    assert current is not None and current.state == "active"
    assert current.health.failing_since == clock.now()


async def test_a_resent_delivery_waits_while_a_later_one_of_its_subject_is_in_flight(
    store: Store, clock: ManualClock
) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(ordering=Ordering.SUBJECT, retry_schedule=()))
    await append(store, clock, order("x1", subject="x"), order("x2", subject="x"))
    [x1] = await lease(store, clock, subscription.id, limit=10)
    settle = Settle(x1.delivery_id, x1.lease_token, Settlement.DEAD, reason=DeadReason.EXHAUSTED)
    await record(store, clock, failed(x1, clock, settle=settle))
    [x2] = await lease(store, clock, subscription.id, limit=10)  # the dead head released the next
    await store.resend_delivery(x1.delivery_id, now=clock.now())
    assert await lease(store, clock, subscription.id, limit=10) == []  # one delivery of a subject at a time
    await record(store, clock, succeeded(x2, clock))
    [again] = await lease(store, clock, subscription.id, limit=10)
    assert again.delivery_id == x1.delivery_id


async def test_dead_rows_in_front_do_not_hide_live_ones(store: Store, clock: ManualClock) -> None:
    subscription = await subscribe(store, clock, endpoint_spec(max_pending_age=timedelta(hours=1)))
    await append(store, clock, *(order(f"old-{n}") for n in range(30)))
    clock.advance(timedelta(hours=2))
    await append(store, clock, order("fresh"))
    [leased] = await lease(store, clock, subscription.id, limit=5)  # 30 expire on the way to it
    assert leased.event.event.id == "fresh"
