"""The service layer in one bundle: what the transports (gRPC, REST) are handed."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.bus.deliveries import Deliveries
from eventbus.bus.groups import ConsumerGroups
from eventbus.bus.keys import ApiKeys
from eventbus.bus.service import Bus
from eventbus.bus.sources import Sources
from eventbus.bus.subscriptions import Subscriptions
from eventbus.bus.types import EventTypes


@dataclass(frozen=True, slots=True)
class Services:
    bus: Bus
    groups: ConsumerGroups
    subscriptions: Subscriptions
    deliveries: Deliveries
    api_keys: ApiKeys
    sources: Sources
    types: EventTypes
