"""Fixtures of the `/hooks/{source}` tests: an in-process server whose only connector is `signed`, a small test
connector that follows the contract the bundled ones do (an HMAC header, a delivery id, events per item)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime

import pytest

from eventbus.bus.service import BusSettings
from eventbus.bus.sources import SourceInfo, SourceInput
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import InvalidArgumentError
from eventbus.model import Event
from eventbus.plugin import (
    Accepted,
    ConnectorRegistry,
    ConnectorResult,
    CustomResponse,
    InboundRequest,
    Refused,
    SourceConfig,
    hookimpl,
    load_plugins,
)
from eventbus.runtime import EventBusServer


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SignedConnector:
    """`X-Signature: sha256=<hex HMAC of the body>`; a JSON body `{"delivery": ..., "items": [{"id", ...}]}`
    becomes one `signed.item` event per item; `{"challenge": c}` is answered with c; `{"crash": true}` raises."""

    name = "signed"

    def secret_headers(self, options: Mapping[str, object]) -> list[str]:
        return ["X-Proof"]  # a credential whose name does not say so: the gateway redacts it on the word

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        if "mode" in options and options["mode"] not in ("strict", "lax"):
            raise InvalidArgumentError.for_field("options.mode", "strict or lax")
        return dict(options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        given = request.header("X-Signature")
        if not given:
            return Refused.unauthorized("the X-Signature header is missing", field="X-Signature")
        if not any(hmac.compare_digest(given, sign(secret, request.body)) for secret in source.secrets):
            return Refused.unauthorized("X-Signature does not match the body", field="X-Signature")
        try:
            document = json.loads(request.body)
        except ValueError:
            return Refused.bad_request("the body is not JSON", field="body")
        if "challenge" in document:
            return CustomResponse.json({"challenge": document["challenge"]})
        if document.get("crash"):
            raise RuntimeError("the connector has a bug")
        delivery = str(document["delivery"])
        events = [
            Event.create(
                type="signed.item",
                source=source.event_source,
                id=f"{delivery}.{index}",
                subject=str(item["id"]),
                data=item,
            )
            for index, item in enumerate(document["items"])
        ]
        return Accepted(events, dedup_key=delivery)


class _Plugin:
    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(SignedConnector())


SECRET = "s3cr3t-for-tests"


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    """Endpoints may point at the tests' local receivers."""
    return dataclasses.replace(server_settings, allow_destinations=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    plugins = load_plugins(extra=[_Plugin()], env={"EVENTBUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    running = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings, plugins=plugins)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def source(server: EventBusServer) -> SourceInfo:
    return await server.services.sources.create(SourceInput(name="shop", connector="signed", secrets=[SECRET]))
