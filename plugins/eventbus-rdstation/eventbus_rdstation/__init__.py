"""eventbus-rdstation: the `rdstation` connector (webhooks in) and destination (events out), one entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, DestinationRegistry, hookimpl
from eventbus_rdstation.connector import RDStationConnector
from eventbus_rdstation.destination import RDStationDestination

__all__ = [
    "RDStationConnector",
    "RDStationDestination",
    "eventbus_register_connectors",
    "eventbus_register_destinations",
]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(RDStationConnector())


@hookimpl
def eventbus_register_destinations(registry: DestinationRegistry) -> None:
    registry.add(RDStationDestination())
