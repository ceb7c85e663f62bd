"""SSRF (DESIGN.md §7): a loopback destination is refused when the endpoint is created, and, should one be stored
anyway (the allowlist narrowed since), the connect-time guard refuses it and the attempt says so."""

from __future__ import annotations

import dataclasses

import pytest

from eventbus.config import ServerSettings
from eventbus.errors import InvalidArgumentError
from tests.delivery.conftest import Servers
from tests.delivery.helpers import (
    MakeReceiver,
    create_endpoint,
    delivery_of,
    order,
    publish,
    settle,
    wait_attempts,
)


async def test_loopback_destination_is_refused_at_creation(
    servers: Servers, server_settings: ServerSettings, receiver: MakeReceiver
) -> None:
    server = await servers.start(dataclasses.replace(server_settings, allow_destinations=()))
    hook = await receiver()

    with pytest.raises(InvalidArgumentError) as refused:
        await create_endpoint(server, hook)

    [violation] = refused.value.violations
    assert violation.field == "options.url"
    assert "loopback" in violation.detail
    assert "--allow-destination" in violation.detail
    assert (await server.services.subscriptions.list_page())[0] == []


async def test_connect_time_guard_refuses_a_stored_loopback_destination(
    servers: Servers, server_settings: ServerSettings, receiver: MakeReceiver
) -> None:
    hook = await receiver()
    allowing = await servers.start()  # 127.0.0.1/32 allowlisted: the endpoint is accepted
    endpoint = await create_endpoint(allowing, hook)
    await servers.stop(allowing)
    server = await servers.start(dataclasses.replace(server_settings, allow_destinations=()))  # same file

    [published] = await publish(server, order())
    delivery = await delivery_of(server, endpoint.subscription.id, published.event_id)
    record, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)

    assert attempt.error_class == "ssrf"
    assert attempt.status_code is None
    assert attempt.error is not None and "loopback" in attempt.error
    assert (attempt.outcome, record.state) == ("retry", "pending")
    await settle(server)
    assert hook.requests == []
