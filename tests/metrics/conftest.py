"""Fixtures of the `/metrics` tests: the delivery tests' servers and receivers (a manual clock starting now,
127.0.0.1 allowlisted), plus a test connector registered on a fresh plugin manager for the ingest and
plugin-error counters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime

import pytest

from eventbus.config import ServerSettings
from eventbus.model import Event
from eventbus.plugin import (
    Accepted,
    ConnectorRegistry,
    ConnectorResult,
    InboundRequest,
    Plugins,
    Refused,
    SourceConfig,
    hookimpl,
    load_plugins,
)
from tests.delivery.conftest import (  # noqa: F401  (fixtures, shared with the delivery tests)
    LOOPBACK,
    clock,
    dispatch_settings,
    receiver,
    server,
    servers,
)

SUBSCRIPTION_LABELS = 3  # small, so the cap tests need few subscriptions


class EchoConnector:
    """`X-Token: <secret>`; the JSON body `{"id": ..., "types": [...]}` becomes one `echo.<t>` event per type (and
    one more of the option `also`, when the source has it);
    `{"crash": true}` raises (a plugin bug the gateway contains and counts)."""

    name = "echo"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return dict(options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        if request.header("X-Token") not in source.secrets:
            return Refused.unauthorized("the X-Token header does not match", field="X-Token")
        document = json.loads(request.body)
        if document.get("crash"):
            raise RuntimeError("the echo connector has a bug")
        kinds = [*document["types"], *([source.options["also"]] if "also" in source.options else [])]
        events = [
            Event.create(type=f"echo.{kind}", source=source.event_source, id=f"{document['id']}.{kind}", data={})
            for kind in kinds
        ]
        return Accepted(events, dedup_key=str(document["id"]))


class _EchoPlugin:
    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(EchoConnector())


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    labels = SUBSCRIPTION_LABELS
    return dataclasses.replace(
        server_settings, allow_destinations=LOOPBACK, shutdown_grace=0.5, metrics_subscription_labels=labels
    )


@pytest.fixture
def echo_plugins() -> Plugins:
    return load_plugins(extra=[_EchoPlugin()], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
