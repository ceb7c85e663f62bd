from __future__ import annotations

import asyncio

from eventbus.client import EventBusClient
from eventbus.model import Event


async def test_publish_then_subscribe_round_trip(client: EventBusClient) -> None:
    sub = client.subscribe("billing", ["order.*"], start="earliest")
    async with sub:
        results = await client.publish([Event.create(type="order.paid", source="/shop", id="o-1", data={"n": 1})])
        assert results[0].duplicate is False
        delivery = await asyncio.wait_for(anext(aiter(sub)), 10)
        assert delivery.event.event.json_data() == {"n": 1}
        assert delivery.event.event_id == results[0].event_id
        await delivery.ack()
