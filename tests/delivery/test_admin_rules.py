"""Service-layer rules around endpoints: concurrent rotations, a new secret on update, masked credentials,
limits, replay of a disabled endpoint, and recovery in chunks."""

from __future__ import annotations

import asyncio

import pytest

from eventbus.bus import subscriptions as subscriptions_module
from eventbus.bus.subscriptions import SubscriptionInput
from eventbus.bus.webhooks import active_secrets
from eventbus.errors import FailedPreconditionError, InvalidArgumentError
from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret
from eventbus.store.base import SubscriptionState
from tests.delivery.helpers import MakeReceiver, Reply, create_endpoint, order, publish, subscription, wait_state


async def test_two_rotations_at_once_both_keep_signing(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver())
    first, second = await asyncio.gather(
        server.services.subscriptions.rotate_secret(endpoint.subscription.id),
        server.services.subscriptions.rotate_secret(endpoint.subscription.id),
    )
    stored = await subscription(server, endpoint.subscription.id)
    signing = active_secrets(stored.secrets, server.bus.clock.now())
    assert {first.revealed["secret"], second.revealed["secret"], endpoint.revealed["secret"]} <= set(signing)


async def test_a_new_secret_on_update_is_a_rotation(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver())
    fresh = generate_secret()
    updated = await server.services.subscriptions.update(
        endpoint.subscription.id, SubscriptionInput(options={"secret": fresh})
    )
    assert updated.revealed["secret"] == fresh
    signing = active_secrets(updated.subscription.secrets, server.bus.clock.now())
    assert signing == [fresh, endpoint.revealed["secret"]]  # the old one still signs for 24 h
    assert "previous_secret_expires_at" in updated.options


async def test_credentials_in_extra_headers_are_masked_when_shown(
    server: EventBusServer, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    token = "Bearer abcdefghijklmnop-1234"
    endpoint = await create_endpoint(
        server, hook, options={"headers": {"Authorization": token, "X-Tenant": "acme", "X-Api-Key": "short"}}
    )
    assert endpoint.options["headers"] == {"authorization": "***1234", "x-tenant": "acme", "x-api-key": "***"}
    await publish(server, order())
    [request] = await hook.wait_for(1)
    assert request.headers["authorization"] == token  # sent as configured


async def test_concurrency_is_capped_per_subscription(server: EventBusServer, receiver: MakeReceiver) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await create_endpoint(server, await receiver(), max_concurrency=101)
    assert [v.field for v in caught.value.violations] == ["max_concurrency"]


async def test_replay_into_a_disabled_endpoint_is_refused(server: EventBusServer, receiver: MakeReceiver) -> None:
    endpoint = await create_endpoint(server, await receiver())
    await server.services.subscriptions.set_state(endpoint.subscription.id, SubscriptionState.DISABLED, "test")
    with pytest.raises(FailedPreconditionError, match="disabled"):
        await server.services.subscriptions.replay(endpoint.subscription.id, since=server.bus.clock.now())


async def test_recover_works_in_chunks_and_takes_each_delivery_once(
    server: EventBusServer, receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions_module, "RECOVER_CHUNK", 2)
    hook = await receiver()
    hook.default = Reply(500)
    since = server.bus.clock.now()
    endpoint = await create_endpoint(server, hook, retry_schedule=[])
    published = await publish(server, *(order(n) for n in range(5)))
    for item in published:
        found, _ = await server.services.deliveries.list_page(subscription_id=endpoint.subscription.id)
        [delivery] = [d for d in found if d.event_id == item.event_id]
        await wait_state(server, delivery.delivery_id, "dead")
    await server.services.subscriptions.pause(endpoint.subscription.id)  # keep them pending once recovered
    count = await server.services.subscriptions.recover(endpoint.subscription.id, since=since, include_pending=True)
    assert count == 5
    found, _ = await server.services.deliveries.list_page(subscription_id=endpoint.subscription.id)
    assert [(d.state, d.attempts) for d in found] == [("pending", 0)] * 5
