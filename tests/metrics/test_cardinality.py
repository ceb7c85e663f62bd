"""Label cardinality stays bounded: subscription ids up to `metrics_subscription_labels` (then `other`), event
types and sources capped, the first ones seen keeping their labels."""

from __future__ import annotations

from eventbus.config import ServerSettings
from eventbus.metrics import OTHER, LabelCap
from eventbus.metrics.registry import SOURCE_LABELS, TYPE_LABELS
from eventbus.model import Event
from eventbus.runtime import EventBusServer
from tests.delivery.helpers import MakeReceiver, create_endpoint, order, publish, settle
from tests.metrics.conftest import SUBSCRIPTION_LABELS
from tests.metrics.helpers import scrape


def test_a_cap_labels_the_first_values_and_keeps_them() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert LabelCap(0)("a") == OTHER


async def test_subscriptions_beyond_the_cap_are_other(server: EventBusServer, receiver: MakeReceiver) -> None:
    hook = await receiver()
    endpoints = [await create_endpoint(server, hook) for _ in range(SUBSCRIPTION_LABELS + 2)]
    await publish(server, order(1))
    await hook.wait_for(len(endpoints))
    await settle(server)
    seen = await scrape(server)
    labels = seen.label_values("eventbus_delivery_attempts_total", "subscription")
    assert len(labels) == SUBSCRIPTION_LABELS + 1
    assert OTHER in labels
    assert seen.value("eventbus_delivery_attempts_total", subscription=OTHER, outcome="succeeded") == 2
    assert seen.value("eventbus_delivery_attempts_total", outcome="succeeded") == len(endpoints)
    gauge_labels = seen.label_values("eventbus_subscription_deliveries", "subscription")
    assert gauge_labels <= labels  # the gauges label the same subscriptions as the counters
    assert all(e.subscription.id not in seen.text for e in endpoints if e.subscription.id not in labels)


async def test_types_and_sources_are_capped(server: EventBusServer) -> None:
    extra = 20
    events = [Event.create(type=f"t.n{n}", source="/many", id=f"t-{n}") for n in range(TYPE_LABELS + extra)]
    events += [Event.create(type="s.one", source=f"/s/{n}", id="s") for n in range(SOURCE_LABELS + extra)]
    await server.bus.publish(events)
    seen = await scrape(server)
    assert len(seen.label_values("eventbus_events_published_total", "type")) <= TYPE_LABELS + 1
    assert len(seen.label_values("eventbus_events_published_total", "source")) <= SOURCE_LABELS + 1
    # The types fill up first: the last `extra` of `t.*` and every `s.one` are `other`.
    assert seen.value("eventbus_events_published_total", type=OTHER) == extra + SOURCE_LABELS + extra
    # `/many` took the first source slot: one more `/s/*` than `extra` is `other`.
    assert seen.value("eventbus_events_published_total", source=OTHER) == extra + 1
    assert seen.value("eventbus_events_published_total") == len(events)


async def test_the_subscription_label_cap_is_set_before_the_dispatcher_can_label_anything(
    server_settings: ServerSettings,
) -> None:
    """Set when the bus is made, not when `/metrics` is installed (after `dispatcher.start()`): attempts of
    deliveries already due at start-up are labelled under the configured cap."""
    made = EventBusServer(server_settings)
    assert made.bus.metrics.subscriptions.limit == SUBSCRIPTION_LABELS
