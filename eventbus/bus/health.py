"""System events: health changes of subscriptions and deliveries, published on the bus as `source=/eventbus`."""

from __future__ import annotations

from collections.abc import Sequence

from eventbus.ids import new_id
from eventbus.model import Event
from eventbus.store.records import HealthChange, HealthChangeKind

SYSTEM_SOURCE = "/eventbus"
SYSTEM_TYPES = {
    HealthChangeKind.FAILING: "eventbus.endpoint.failing",
    HealthChangeKind.DISABLED: "eventbus.endpoint.disabled",
    HealthChangeKind.ENABLED: "eventbus.endpoint.enabled",
    HealthChangeKind.CIRCUIT_OPENED: "eventbus.endpoint.circuit_opened",
    HealthChangeKind.CIRCUIT_CLOSED: "eventbus.endpoint.circuit_closed",
    HealthChangeKind.DELIVERY_DEAD: "eventbus.delivery.dead",
    HealthChangeKind.DELIVERY_RECOVERED: "eventbus.delivery.recovered",
}


def system_events(changes: Sequence[HealthChange]) -> list[Event]:
    """One event per change. The subject is the subscription's id: fan-out never sends a subscription its own."""
    events = []
    for change in changes:
        data: dict[str, object] = {"subscription_id": change.subscription_id, "kind": change.subscription_kind}
        data.update({k: v for k, v in change.detail.items() if v is not None})
        events.append(
            Event.create(
                type=SYSTEM_TYPES[change.kind],
                source=SYSTEM_SOURCE,
                id=new_id("sys"),
                subject=change.subscription_id,
                time=change.at,
                data=data,
            )
        )
    return events
