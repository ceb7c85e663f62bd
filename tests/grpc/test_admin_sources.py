"""Admin over gRPC for inbound sources: every call through the real in-process server, the Python client and the raw
stub. The server's only connector is `picky`, a test plugin's, so these tests do not depend on installed plugins."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest

from eventbus.bus.service import BusSettings
from eventbus.client import EventBusClient
from eventbus.clock import ManualClock
from eventbus.config import ServerSettings
from eventbus.errors import AlreadyExistsError, EventBusError, InvalidArgumentError, NotFoundError
from eventbus.model import Event
from eventbus.plugin import Accepted, ConnectorResult, InboundRequest, SourceConfig, load_plugins
from eventbus.runtime import EventBusServer
from eventbus.signing import generate_secret
from eventbus.v1 import admin_pb2, admin_pb2_grpc
from tests.plugin.support import NO_AUTOLOAD, RegisteringPlugin

from .helpers import violations

UNKNOWN_SRC = "src_01JZZZZZZZZZZZZZZZZZZZZZZZ"
GRACE = timedelta(hours=24)


class PickyConnector:
    """Takes `mode` (strict or lax) and nothing else; `explode` stands for a plugin's own bug."""

    name = "picky"

    def validate_options(self, options: Mapping[str, object]) -> dict[str, object]:
        if "explode" in options:
            raise RuntimeError("a bug in the plugin")
        for key, value in options.items():
            if key != "mode":
                raise InvalidArgumentError.for_field(f"options.{key}", "unknown option; picky takes mode")
            if value not in ("strict", "lax"):
                raise InvalidArgumentError.for_field("options.mode", "strict or lax")
        return {"mode": "strict", **options}

    async def handle(self, request: InboundRequest, source: SourceConfig, now: datetime) -> ConnectorResult:
        return Accepted([Event.create(type="picky.received", source=source.event_source, data=request.body)])


@pytest.fixture
async def server(
    server_settings: ServerSettings, clock: ManualClock, bus_settings: BusSettings
) -> AsyncIterator[EventBusServer]:
    """The in-process server with `picky` as its only connector (installed plugins are not loaded)."""
    plugins = load_plugins(extra=[RegisteringPlugin("picky-plugin", connectors=(PickyConnector(),))], env=NO_AUTOLOAD)
    running = EventBusServer(server_settings, clock=clock, bus_settings=bus_settings, plugins=plugins)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> dict[str, str]:
    """Await a raw stub call that must fail with `code`; its field violations."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return violations(caught.value)


def fields_of(error: EventBusError) -> list[str]:
    return [v.field for v in error.violations]


# -- create, get, list --------------------------------------------------------------------------------------------


async def test_create_with_a_generated_secret_reveals_it_once(client: EventBusClient, clock: ManualClock) -> None:
    created = await client.create_source("shop", "picky")
    assert created.id.startswith("src_") and created.name == "shop" and created.connector == "picky"
    assert created.path == "/hooks/shop"
    assert created.options == {"mode": "strict"}  # as the connector validated them
    assert (created.enabled, created.rate_limit, created.secrets_count) == (True, None, 1)
    assert created.previous_secret_expires_at is None
    assert created.created_at == created.updated_at == clock.now()
    assert created.secret is not None and created.secret.startswith("whsec_")
    assert created.revealed_secrets == (created.secret,)

    by_name, by_id = await client.get_source("shop"), await client.get_source(created.id)
    assert by_name == by_id == dataclasses.replace(created, revealed_secrets=())
    assert by_name.secret is None


async def test_create_keeps_what_is_given_and_reveals_nothing(client: EventBusClient) -> None:
    secrets = [generate_secret(), "a-plain-provider-secret"]
    created = await client.create_source(
        "crm", "picky", secrets=secrets, options={"mode": "lax"}, enabled=False, rate_limit=2.5
    )
    assert created.revealed_secrets == () and created.secret is None  # the caller knows them already
    assert (created.options, created.enabled, created.rate_limit, created.secrets_count) == (
        {"mode": "lax"},
        False,
        2.5,
        2,
    )
    assert created.previous_secret_expires_at is None  # two given secrets: no rotation in its grace


async def test_secrets_never_appear_in_get_or_list(
    client: EventBusClient, admin_stub: admin_pb2_grpc.AdminStub
) -> None:
    given = "given-secret-0123456789"
    generated = (await client.create_source("one", "picky")).secret
    await client.create_source("two", "picky", secrets=[given])
    rotated = (await client.rotate_source_secret("two")).secret
    assert generated and rotated
    answers = [
        await admin_stub.GetSource(admin_pb2.GetSourceRequest(source="one")),
        await admin_stub.GetSource(admin_pb2.GetSourceRequest(source="two")),
        await admin_stub.ListSources(admin_pb2.ListSourcesRequest()),
        await admin_stub.UpdateSource(admin_pb2.UpdateSourceRequest(source="two", rate_limit=1)),
    ]
    for answer in answers:
        wire = answer.SerializeToString()
        for secret in (given, generated, rotated):
            assert secret.encode() not in wire


async def test_list_pages_in_creation_order(client: EventBusClient) -> None:
    names = ["a1", "b2", "c3"]
    for name in names:
        await client.create_source(name, "picky", secrets=["s-" + name])
    first, token = await client.list_sources(page_size=2)
    assert [s.name for s in first] == ["a1", "b2"] and token
    assert all(s.revealed_secrets == () for s in first)
    second, last = await client.list_sources(page_size=2, page_token=token)
    assert ([s.name for s in second], last) == (["c3"], "")
    everything, none_left = await client.list_sources()
    assert ([s.name for s in everything], none_left) == (names, "")


async def test_list_refuses_a_bad_page(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    bad_token = admin_stub.ListSources(admin_pb2.ListSourcesRequest(page_token="not-a-token"))
    assert "page_token" in await refused(bad_token, grpc.StatusCode.INVALID_ARGUMENT)
    too_big = admin_stub.ListSources(admin_pb2.ListSourcesRequest(page_size=1001))
    assert "page_size" in await refused(too_big, grpc.StatusCode.INVALID_ARGUMENT)


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"name": "Shop Name"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"connector": "nosuch"}, "connector"),
        ({"connector": ""}, "connector"),
        ({"secrets": ["a", "b", "c"]}, "secrets"),
        ({"secrets": ["line\nbreak"]}, "secrets[0]"),
        ({"secrets": ["ok", "x" * 1025]}, "secrets[1]"),
        ({"options": {"mode": "sloppy"}}, "options.mode"),
        ({"options": {"colour": "red"}}, "options.colour"),
        ({"options": {"explode": True}}, "options"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": 100_001}, "rate_limit"),
    ],
)
async def test_create_refuses_bad_input_naming_the_field(
    client: EventBusClient, request_fields: dict[str, Any], field: str
) -> None:
    given: dict[str, Any] = {"name": "shop", "connector": "picky", **request_fields}
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_source(**given)
    assert fields_of(caught.value) == [field]
    assert (await client.list_sources()) == ([], "")  # nothing stored


async def test_an_unknown_connector_lists_the_known_ones(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_stub.CreateSource(admin_pb2.CreateSourceRequest(name="shop", connector="github"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown connector 'github'" in (caught.value.details() or "")
    assert "picky" in violations(caught.value)["connector"]


async def test_a_plugin_bug_in_validation_is_the_callers_invalid_argument(client: EventBusClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.create_source("shop", "picky", options={"explode": 1})
    assert "connector 'picky' refused them: a bug in the plugin" in caught.value.message


async def test_a_taken_name_already_exists(client: EventBusClient) -> None:
    await client.create_source("shop", "picky")
    with pytest.raises(AlreadyExistsError):
        await client.create_source("shop", "picky")


async def test_an_unknown_source_is_not_found(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    for ref in ("nosuch", UNKNOWN_SRC):
        calls = [
            admin_stub.GetSource(admin_pb2.GetSourceRequest(source=ref)),
            admin_stub.UpdateSource(admin_pb2.UpdateSourceRequest(source=ref, enabled=False)),
            admin_stub.RotateSourceSecret(admin_pb2.RotateSourceSecretRequest(source=ref)),
            admin_stub.DeleteSource(admin_pb2.DeleteSourceRequest(source=ref)),
        ]
        for call in calls:
            await refused(call, grpc.StatusCode.NOT_FOUND)


async def test_a_missing_reference_names_the_field(admin_stub: admin_pb2_grpc.AdminStub) -> None:
    calls = [
        admin_stub.GetSource(admin_pb2.GetSourceRequest()),
        admin_stub.UpdateSource(admin_pb2.UpdateSourceRequest()),
        admin_stub.RotateSourceSecret(admin_pb2.RotateSourceSecretRequest()),
        admin_stub.DeleteSource(admin_pb2.DeleteSourceRequest()),
    ]
    for call in calls:
        assert "source" in await refused(call, grpc.StatusCode.INVALID_ARGUMENT)


# -- update -------------------------------------------------------------------------------------------------------


async def test_update_changes_only_what_is_given(client: EventBusClient, clock: ManualClock) -> None:
    created = await client.create_source("shop", "picky", options={"mode": "lax"}, rate_limit=5)
    clock.advance(10)
    paused = await client.update_source("shop", enabled=False)
    assert (paused.enabled, paused.options, paused.rate_limit, paused.secrets_count) == (False, {"mode": "lax"}, 5, 1)
    assert paused.updated_at == clock.now() and paused.created_at == created.created_at
    assert paused.revealed_secrets == ()

    limited = await client.update_source(created.id, rate_limit=0.5, options={"mode": "strict"})
    assert (limited.enabled, limited.rate_limit, limited.options) == (False, 0.5, {"mode": "strict"})
    unlimited = await client.update_source("shop", rate_limit=0, enabled=True)
    assert (unlimited.enabled, unlimited.rate_limit) == (True, None)  # 0 removes the limit


async def test_update_options_are_merged_and_checked_by_the_connector(client: EventBusClient) -> None:
    await client.create_source("shop", "picky", options={"mode": "lax"})
    with pytest.raises(InvalidArgumentError) as caught:
        await client.update_source("shop", options={"mode": "sloppy"})
    assert fields_of(caught.value) == ["options.mode"]
    assert (await client.get_source("shop")).options == {"mode": "lax"}  # unchanged
    assert (await client.update_source("shop", options={})).options == {"mode": "lax"}  # merged: nothing to change


async def test_update_secrets_tells_unset_from_empty(
    client: EventBusClient, server: EventBusServer, admin_stub: admin_pb2_grpc.AdminStub
) -> None:
    await client.create_source("shop", "picky", secrets=["first"])
    unset = await admin_stub.UpdateSource(admin_pb2.UpdateSourceRequest(source="shop", enabled=True))
    assert unset.secrets_count == 1 and not unset.revealed_secrets

    replaced = await client.update_source("shop", secrets=["second", "third"])
    assert replaced.secrets_count == 2 and replaced.revealed_secrets == ()  # the caller gave them: nothing revealed
    stored = await server.services.sources.find("shop")
    assert stored.active_secrets(server.bus.clock.now()) == ("second", "third")

    emptied = await admin_stub.UpdateSource(
        admin_pb2.UpdateSourceRequest(source="shop", secrets=admin_pb2.SourceSecrets())
    )
    assert emptied.secrets_count == 0

    with pytest.raises(InvalidArgumentError) as caught:
        await client.update_source("shop", secrets=["a", "b", "c"])
    assert fields_of(caught.value) == ["secrets"]
    with pytest.raises(InvalidArgumentError) as caught:
        await client.update_source("shop", rate_limit=-3)
    assert fields_of(caught.value) == ["rate_limit"]


# -- rotate, delete -----------------------------------------------------------------------------------------------


async def test_rotation_keeps_two_secrets_for_the_grace(
    client: EventBusClient, server: EventBusServer, clock: ManualClock
) -> None:
    await client.create_source("shop", "picky", secrets=["old-secret"])
    rotated = await client.rotate_source_secret("shop")
    assert rotated.secret is not None and rotated.secret.startswith("whsec_")
    assert rotated.secrets_count == 2
    assert rotated.previous_secret_expires_at == clock.now() + GRACE
    assert (await server.services.sources.find("shop")).active_secrets(clock.now()) == (rotated.secret, "old-secret")

    shown = await client.get_source("shop")
    assert (shown.secrets_count, shown.previous_secret_expires_at, shown.secret) == (2, clock.now() + GRACE, None)

    clock.advance(GRACE + timedelta(seconds=1))
    after = await client.get_source("shop")
    assert (after.secrets_count, after.previous_secret_expires_at) == (1, None)


async def test_rotation_to_a_given_secret_replaces_the_one_in_grace(client: EventBusClient, clock: ManualClock) -> None:
    await client.create_source("shop", "picky", secrets=["one"])
    first = await client.rotate_source_secret("shop", "two")
    assert first.revealed_secrets == ("two",)
    clock.advance(60)
    second = await client.rotate_source_secret("shop", "three")
    assert second.secrets_count == 2  # "three" and "two"; "one" is gone at once
    assert second.previous_secret_expires_at == clock.now() + GRACE
    with pytest.raises(InvalidArgumentError) as caught:
        await client.rotate_source_secret("shop", "bad\nsecret")
    assert fields_of(caught.value) == ["secrets[0]"]


async def test_delete_frees_the_name(client: EventBusClient) -> None:
    created = await client.create_source("shop", "picky")
    await client.delete_source("shop")
    with pytest.raises(NotFoundError):
        await client.get_source(created.id)
    with pytest.raises(NotFoundError):
        await client.delete_source("shop")
    again = await client.create_source("shop", "picky")
    assert again.id != created.id
    assert [s.id for s in (await client.list_sources())[0]] == [again.id]
