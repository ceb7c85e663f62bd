"""eventbus-github: the `github` connector, registered through the `eventbus` entry point."""

from __future__ import annotations

from eventbus.plugin import ConnectorRegistry, hookimpl
from eventbus_github.connector import GitHubConnector

__all__ = ["GitHubConnector", "eventbus_register_connectors"]


@hookimpl
def eventbus_register_connectors(registry: ConnectorRegistry) -> None:
    registry.add(GitHubConnector())
