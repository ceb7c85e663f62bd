"""A reload that takes a range off `security.allow_destinations` also ends the kept-alive connections to it: the
next delivery is refused by the SSRF guard, not sent over a connection vetted under the old allowlist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.config.conftest import Servers, write
from tests.delivery.helpers import Receiver, create_endpoint, delivery_of, order, publish, wait_attempts


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    started = Receiver()
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def test_removing_a_range_drops_the_pooled_connections_to_it(
    servers: Servers, config_path: Path, hook: Receiver
) -> None:
    write(config_path, '[security]\nallow_destinations = ["127.0.0.0/8"]\n')
    server = await servers.start(config_path)
    endpoint = await create_endpoint(server, hook)
    [first] = await publish(server, order(1))
    delivery = await delivery_of(server, endpoint.subscription.id, first.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert attempt.outcome == "succeeded" and len(hook.requests) == 1  # its connection now idle in the pool

    write(config_path, '[security]\nallow_destinations = ["192.0.2.0/24"]\n')
    outcome = await server.reload()
    assert outcome.ok and outcome.applied == ["security.allow_destinations"], outcome
    [second] = await publish(server, order(2))
    delivery = await delivery_of(server, endpoint.subscription.id, second.event_id)
    _, [attempt] = await wait_attempts(server, delivery.delivery_id, 1)
    assert (attempt.outcome, attempt.error_class) == ("retry", "ssrf"), attempt
    assert attempt.error is not None and "loopback" in attempt.error
    assert len(hook.requests) == 1  # nothing reached the now-forbidden receiver
