"""Test sends: one stored event, one delivery to that subscription only, attempted at once on the normal machinery
(its attempt logged); a paused or disabled subscription is refused."""

from __future__ import annotations

import pytest

from eventbus.bus.subscriptions import TEST_SOURCE, TEST_TYPE
from eventbus.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from eventbus.runtime import EventBusServer
from eventbus.store.base import SubscriptionState
from tests.delivery.helpers import MakeReceiver, create_endpoint, deliveries_of, settle, wait_state


async def test_one_delivery_to_that_subscription_only_sent_at_once(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    tested_hook, other_hook = await receiver(), await receiver()
    tested = await create_endpoint(server, tested_hook, patterns=["order.*"])
    # Every type, system ones included: ordinary fan-out would hand it the test event too.
    other = await create_endpoint(server, other_hook, patterns=["**", "eventbus.**"])

    record = await server.services.subscriptions.send_test(tested.subscription.id)
    assert record.subscription_id == tested.subscription.id and record.state in ("pending", "leased")

    [request] = await tested_hook.wait_for(1)
    assert request.webhook_id == record.event_id
    body = request.json()
    assert body["type"] == TEST_TYPE
    assert body["data"] == {"message": "a test event from eventbus", "subscription_id": tested.subscription.id}
    done = await wait_state(server, record.delivery_id, "succeeded")
    _, attempts = await server.services.deliveries.get(record.delivery_id)
    assert (done.attempts, [a.outcome for a in attempts], attempts[0].status_code) == (1, ["succeeded"], 200)

    stored = await server.bus.get_event(event_id=record.event_id)
    assert (stored.event.source, stored.event.subject) == (TEST_SOURCE, tested.subscription.id)
    await settle(server)
    assert other_hook.requests == [] and await deliveries_of(server, other.subscription.id) == []
    assert [d.delivery_id for d in await deliveries_of(server, tested.subscription.id)] == [record.delivery_id]


async def test_a_given_type_and_data_reach_only_that_subscription(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    tested_hook, other_hook = await receiver(), await receiver()
    tested = await create_endpoint(server, tested_hook, patterns=["invoice.*"])
    other = await create_endpoint(server, other_hook, patterns=["**", "eventbus.**"])
    record = await server.services.subscriptions.send_test(
        tested.subscription.id, type="eventbus.test.order", data={"total": 10}
    )
    [request] = await tested_hook.wait_for(1)
    assert (request.json()["type"], request.json()["data"]) == ("eventbus.test.order", {"total": 10})
    await wait_state(server, record.delivery_id, "succeeded")
    await settle(server)
    assert other_hook.requests == [] and await deliveries_of(server, other.subscription.id) == []
    assert (await server.services.types.get("eventbus.test.order")).count == 1  # catalogued like any stored event


async def test_a_test_event_never_takes_a_business_or_system_type(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    tested = await create_endpoint(server, await receiver())
    for bad in ("order.paid", "eventbus.endpoint.failing", "order paid"):
        with pytest.raises(InvalidArgumentError) as refused:
            await server.services.subscriptions.send_test(tested.subscription.id, type=bad)
        assert [v.field for v in refused.value.violations] == ["type"]
    assert await deliveries_of(server, tested.subscription.id) == []


async def test_paused_disabled_and_unknown_subscriptions_are_refused(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    tested = await create_endpoint(server, await receiver())
    subscriptions = server.services.subscriptions
    for state in (SubscriptionState.PAUSED, SubscriptionState.DISABLED):
        await subscriptions.set_state(tested.subscription.id, state, "by the test")
        with pytest.raises(FailedPreconditionError, match=state.value):
            await subscriptions.send_test(tested.subscription.id)
    with pytest.raises(NotFoundError):
        await subscriptions.send_test("sub_01JZZZZZZZZZZZZZZZZZZZZZZZ")
    assert await deliveries_of(server, tested.subscription.id) == []
