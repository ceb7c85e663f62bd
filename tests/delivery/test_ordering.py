"""Ordering by subject (DESIGN.md §3): one subject strictly in seq order; a failing subject holds only itself;
its head succeeding or dying releases the next."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventbus.bus.deliveries import EventRef
from eventbus.clock import ManualClock
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import (
    MakeReceiver,
    Received,
    Reply,
    advance_to,
    create_endpoint,
    delivery_of,
    order,
    publish,
    settle,
    wait_attempts,
)


@pytest.mark.parametrize("head_outcome", ["succeeds", "dies"])
async def test_a_failing_subject_holds_only_itself_until_its_head_succeeds_or_dies(
    server: EventBusServer, receiver: MakeReceiver, clock: ManualClock, head_outcome: str
) -> None:
    hook = await receiver()
    failures = {"x1": 1 if head_outcome == "succeeds" else 99}

    def respond(request: Received) -> Reply:
        name = request.json()["data"]["n"]
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            return Reply(500)
        return Reply(200)

    hook.respond = respond
    # One retry, 1 s ± 20 % later. The clock is advanced exactly to it: the dispatcher must sleep until the
    # head's retry, not until its 1 s poll (held-back deliveries do not make the subscription look due).
    endpoint = await create_endpoint(server, hook, ordering="subject", retry_schedule=[timedelta(seconds=1)])
    sub_id = endpoint.subscription.id
    x1, x2, y1, y2 = await publish(
        server, order("x1", subject="X"), order("x2", subject="X"), order("y1", subject="Y"), order("y2", subject="Y")
    )

    await hook.wait_for(3)
    await settle(server)
    names = [r.json()["data"]["n"] for r in hook.requests]
    assert sorted(names) == ["x1", "y1", "y2"]  # subject Y flows, x2 waits behind the failed x1
    assert names.index("y1") < names.index("y2")
    head = await delivery_of(server, sub_id, x1.event_id)
    _, [attempt] = await wait_attempts(server, head.delivery_id, 1)
    assert attempt.next_attempt_at is not None
    why = await server.services.deliveries.why(sub_id, EventRef(event_id=x2.event_id))
    assert why.verdict == "held"
    assert any(head.delivery_id in reason and "ordering by subject" in reason for reason in why.reasons)

    advance_to(clock, attempt.next_attempt_at)

    await hook.wait_for(5)
    names = [r.json()["data"]["n"] for r in hook.requests]
    assert [n for n in names if n.startswith("x")] == ["x1", "x1", "x2"]
    record, _ = await wait_attempts(server, head.delivery_id, 2)
    if head_outcome == "succeeds":
        assert record.state == "succeeded"
    else:
        assert (record.state, record.dead_reason) == ("dead", "exhausted")
    assert {y1.event_id, y2.event_id} <= {r.webhook_id for r in hook.requests}
