"""Store contract, the event-type catalogue: listing in byte order by prefix, schemas ahead of events, retention.

Every test speaks the `EventTypeStore` Protocol only: any backend runs this file through the `store` fixture.
"""

from __future__ import annotations

from datetime import timedelta

from eventbus.clock import ManualClock
from eventbus.store.base import Store
from eventbus.store.types import event_type_store_of
from tests.store.support import append, order

SCHEMA = '{"type": "object"}'


async def test_types_list_in_byte_order_and_by_prefix(store: Store, clock: ManualClock) -> None:
    types = event_type_store_of(store)
    names = ["order.paid", "order_x", "order-x", "order.Paid", "orders", "other"]
    for name in names:
        await types.set_event_schema(name, SCHEMA, now=clock.now())
    listed = [t.type for t in await types.list_event_types(after="", limit=10)]
    assert listed == sorted(names, key=str.encode)  # '-' < '.' < 'P' < '_' < 's', whatever the collation
    assert [t.type for t in await types.list_event_types(after="", limit=10, prefix="order.")] == [
        "order.Paid",
        "order.paid",
    ]
    page = await types.list_event_types(after="order.Paid", limit=2, prefix="order")
    assert [t.type for t in page] == ["order.paid", "order_x"]
    assert [s.type for s in await types.event_schemas()] == listed


async def test_a_schema_ahead_of_its_events_leaves_no_trace_but_a_seen_type_keeps_its_counts(
    store: Store, clock: ManualClock
) -> None:
    types = event_type_store_of(store)
    ahead = await types.set_event_schema("lead.converted", SCHEMA, now=clock.now())
    assert (ahead.count, ahead.first_seen, ahead.schema, ahead.schema_updated_at) == (0, None, SCHEMA, clock.now())
    assert await types.delete_event_schema("lead.converted", now=clock.now()) is True
    assert await types.get_event_type("lead.converted") is None
    await append(store, clock, order("o-1"), order("o-2"))
    await types.set_event_schema("order.paid", SCHEMA, now=clock.now())
    clock.advance(1)
    assert await types.delete_event_schema("order.paid", now=clock.now()) is True
    assert await types.delete_event_schema("order.paid", now=clock.now()) is False  # it has none now
    seen = await types.get_event_type("order.paid")
    assert seen is not None and (seen.count, seen.schema, seen.schema_updated_at) == (2, None, clock.now())


async def test_retention_forgets_types_not_seen_for_long_unless_they_have_a_schema(
    store: Store, clock: ManualClock
) -> None:
    types = event_type_store_of(store)
    await append(store, clock, order("o-1"), order("r-1", type="order.refunded"))
    await types.set_event_schema("order.refunded", SCHEMA, now=clock.now())
    clock.advance(timedelta(days=8))
    assert await types.prune_event_types(older_than=clock.now() - timedelta(days=7), limit=10) == 1
    assert [t.type for t in await types.list_event_types(after="", limit=10)] == ["order.refunded"]
