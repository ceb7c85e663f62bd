"""A plugin that raises is contained: logged as `plugin_failed`, counted, and the others keep working."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from eventbus.egress.client import EgressClient
from eventbus.egress.ssrf import DestinationPolicy
from eventbus.model import Event, StoredEvent
from eventbus.plugin import (
    Accepted,
    ConnectorRegistry,
    ConnectorResult,
    CustomResponse,
    Delivery,
    DestinationContext,
    DestinationRegistry,
    DestinationResult,
    Headers,
    InboundRequest,
    PluginFailure,
    Refused,
    SourceConfig,
    hookimpl,
)
from eventbus.signing import verify_standard_webhook
from tests.plugin.support import CountingDestination, EchoConnector, RegisteringPlugin, fresh

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = SourceConfig("shop", "echo", secrets=("s3cret",))


def request(token: str = "s3cret") -> InboundRequest:
    return InboundRequest("POST", "/hooks/shop", headers=Headers.of({"X-Echo-Token": token}), body=b"{}")


class Raising:
    __name__ = "raising"

    @hookimpl
    def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(EchoConnector("half-added"))
        raise RuntimeError("boom in register")

    @hookimpl
    def eventbus_register_destinations(self, registry: DestinationRegistry) -> None:
        raise KeyError("missing setting")


class AsyncRegister:
    __name__ = "async-register"

    @hookimpl
    async def eventbus_register_connectors(self, registry: ConnectorRegistry) -> None:
        registry.add(EchoConnector("never"))


def test_a_raising_register_hook_contributes_nothing_and_the_others_still_register() -> None:
    healthy = RegisteringPlugin("healthy", connectors=(EchoConnector(),), destinations=(CountingDestination(),))
    with capture_logs() as logs:
        plugins = fresh(healthy, Raising(), AsyncRegister())
        infos = {info.name: info for info in plugins.info()}

    assert plugins.connectors().names == ("echo",)  # "half-added" was withdrawn with its failing plugin
    assert plugins.destinations().names == ("counting",)
    assert plugins.failures == {"raising": 2, "async-register": 1}
    assert infos["raising"].failures == 2
    assert infos["healthy"].connectors == ("echo",)
    failed = [(entry["plugin"], entry["hook"], entry["error"]) for entry in logs if entry["event"] == "plugin_failed"]
    assert ("raising", "eventbus_register_connectors", "RuntimeError: boom in register") in failed
    assert ("raising", "eventbus_register_destinations", "KeyError: 'missing setting'") in failed
    assert (
        "async-register",
        "eventbus_register_connectors",
        "TypeError: eventbus_register_connectors must be synchronous and return None (call registry.add)",
    ) in failed
    assert all(entry["log_level"] == "error" and entry["exc_info"] for entry in logs)


async def test_call_connector_passes_results_through() -> None:
    plugins = fresh(RegisteringPlugin("echo", connectors=(EchoConnector(),)))
    connector = plugins.connectors().get("echo")
    assert connector is not None

    accepted = await plugins.call_connector(connector, request(), SOURCE, NOW)
    refused = await plugins.call_connector(connector, request("wrong"), SOURCE, NOW)

    assert isinstance(accepted, Accepted)
    assert [(e.type, e.source, e.time, e.data) for e in accepted.events] == [
        ("echo.received", "/hooks/shop", NOW, b"{}")
    ]
    assert refused == Refused(401, "X-Echo-Token does not match", "X-Echo-Token")
    assert plugins.failures == {}


class Misbehaving:
    """One connector, several ways of breaking the contract, chosen by the request path."""

    name = "bad"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        return dict(options)

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        match request.path:
            case "/raise":
                raise ZeroDivisionError("division by zero")
            case "/none":
                return None  # type: ignore[return-value]
            case "/foreign-source":
                return Accepted([Event.create(type="bad.x", source="/hooks/other", id="1")])
            case "/foreign-type":
                return Accepted([Event.create(type="github.push", source=source.event_source, id="1")])
            case "/invalid-event":  # built without Event.create, so not validated yet
                return Accepted([Event(id="1", source=source.event_source, type="bad.x", subject="")])
            case "/bad-input":  # e.g. a provider's event name that is no valid type segment
                return Accepted([Event.create(type="bad.has space", source=source.event_source, id="1")])
            case "/unsigned":  # the signing helpers raise UnauthenticatedError
                verify_standard_webhook(dict(request.headers), request.body, secrets=source.secrets, now=now)
            case "/too-large":
                data = b"x" * (1024 * 1024 + 1)
                return Accepted([Event(id="1", source=source.event_source, type="bad.x", data=data)])
        return CustomResponse.text("ok")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/raise", "ZeroDivisionError: division by zero"),
        ("/none", "TypeError: handle() returned NoneType, not Accepted, Refused or CustomResponse"),
        ("/foreign-source", "ValueError: events[0].source is '/hooks/other'; it must be '/hooks/bad-src'"),
        ("/foreign-type", "ValueError: events[0].type is 'github.push'; it must start with 'bad.'"),
    ],
)
async def test_a_connector_that_breaks_the_contract_becomes_a_plugin_failure(path: str, error: str) -> None:
    plugins = fresh(RegisteringPlugin("bad-plugin", connectors=(Misbehaving(),)))
    source = SourceConfig("bad-src", "bad")
    with capture_logs() as logs:
        result = await plugins.call_connector(Misbehaving(), InboundRequest("POST", path), source, NOW)

    assert result == PluginFailure("bad-plugin", "connector 'bad'", error)
    assert result.message == f"plugin 'bad-plugin' failed in connector 'bad': {error}"
    assert plugins.failures == {"bad-plugin": 1}
    assert [(e["event"], e["plugin"], e["hook"]) for e in logs] == [("plugin_failed", "bad-plugin", "connector 'bad'")]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/invalid-event", 400, "events[0].subject: must not be empty when set"),
        ("/bad-input", 400, "type: 'bad.has space': segments separated by '.', each of [A-Za-z0-9_-]+"),
        ("/too-large", 413, "over the limit of 1048576"),
        ("/unsigned", 401, "missing webhook-id header"),
    ],
)
async def test_invalid_events_are_the_senders_fault(path: str, status: int, reason: str) -> None:
    plugins = fresh(RegisteringPlugin("bad-plugin", connectors=(Misbehaving(),)))
    result = await plugins.call_connector(Misbehaving(), InboundRequest("POST", path), SourceConfig("s", "bad"), NOW)

    assert isinstance(result, Refused)
    assert result.status == status
    assert reason in result.reason
    assert plugins.failures == {}


class FlakyDestination(CountingDestination):
    async def deliver(self, delivery: Delivery, context: DestinationContext) -> DestinationResult:
        if delivery.attempt == 1:
            raise ConnectionResetError("peer reset")
        if delivery.attempt == 2:
            return "ok"  # type: ignore[return-value]
        return DestinationResult.retry("rate limited", delay=context.options["backoff"])  # type: ignore[arg-type]


class MemoryState:
    """The smallest KeyValueState, for a context (the persistent one comes with the store)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def set(self, key: str, value: str, *, ttl: object = None) -> None:
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)


async def test_call_destination_contains_exceptions_and_wrong_results() -> None:
    flaky = FlakyDestination("flaky")
    plugins = fresh(RegisteringPlugin("outbound", destinations=(flaky,)))
    stored = StoredEvent(Event.create(type="order.paid", source="/shop", id="1"), "evt_1", 1, NOW)
    egress = EgressClient(DestinationPolicy(), user_agent="eventbus-test")
    await egress.start()
    try:
        context = DestinationContext(client=egress, options={"backoff": 5}, state=MemoryState(), now=NOW)
        results = [
            await plugins.call_destination(flaky, Delivery("dlv_1", "sub_1", stored, attempt, NOW), context)
            for attempt in (1, 2, 3)
        ]
    finally:
        await egress.close()

    assert results[:2] == [
        PluginFailure("outbound", "destination 'flaky'", "ConnectionResetError: peer reset"),
        PluginFailure("outbound", "destination 'flaky'", "TypeError: deliver() returned str, not DestinationResult"),
    ]
    assert results[2] == DestinationResult.retry("rate limited", delay=5)
    assert plugins.failures == {"outbound": 2}
