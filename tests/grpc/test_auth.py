"""A server with an API key: every bus and admin call needs it; health and reflection stay open."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventbus.client import EventBusClient
from eventbus.config import ServerSettings
from eventbus.errors import UnauthenticatedError
from eventbus.runtime import EventBusServer
from eventbus.v1 import admin_pb2, admin_pb2_grpc, eventbus_pb2_grpc
from eventbus.v1 import eventbus_pb2 as pb

from .helpers import Consumer, RawStream, ce, event

API_KEY = "ebk_test_secretsecretsecret"


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    return dataclasses.replace(server_settings, api_key=API_KEY)


@pytest.fixture
def address(server: EventBusServer) -> str:
    assert server.addresses is not None
    return str(server.addresses.grpc)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer ebk_test_wrong"),),
        (("authorization", f"Basic {API_KEY}"),),
        (("authorization", "Bearer "),),
        (("authorization", API_KEY),),
    ],
    ids=["none", "wrong-key", "wrong-scheme", "empty", "no-scheme"],
)
async def test_calls_without_the_right_key_are_unauthenticated(
    stub: eventbus_pb2_grpc.EventBusStub,
    admin_stub: admin_pb2_grpc.AdminStub,
    metadata: tuple[tuple[str, str], ...],
) -> None:
    calls = [
        stub.Publish(pb.PublishRequest(events=[ce(id="x")]), metadata=metadata),
        stub.ListEvents(pb.ListEventsRequest(), metadata=metadata),
        stub.GetEvent(pb.GetEventRequest(event_id="evt_x"), metadata=metadata),
        admin_stub.ListGroups(admin_pb2.ListGroupsRequest(), metadata=metadata),
        admin_stub.GetGroup(admin_pb2.GetGroupRequest(name="g"), metadata=metadata),
        admin_stub.DeleteGroup(admin_pb2.DeleteGroupRequest(name="g"), metadata=metadata),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The server may refuse the stream before the join is written: either way the code is UNAUTHENTICATED.
    stream = RawStream(stub, metadata)
    try:
        await stream.call.write(pb.SubscribeRequest(join=pb.Join(group="g")))
    except grpc.aio.AioRpcError as refused:
        error = refused
    else:
        error = await stream.failure()
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    # Nothing was stored or created by the refused calls.
    good = (("authorization", f"Bearer {API_KEY}"),)
    assert list((await stub.ListEvents(pb.ListEventsRequest(), metadata=good)).events) == []
    assert list((await admin_stub.ListGroups(admin_pb2.ListGroupsRequest(), metadata=good)).groups) == []


async def test_a_keyless_stream_that_never_joins_is_refused_within_seconds(
    stub: eventbus_pb2_grpc.EventBusStub,
) -> None:
    """The server waits for a refused stream's join only briefly: a keyless client cannot hold a call slot."""
    stream = RawStream(stub, (("authorization", "Bearer ebk_test_wrongwrong"),))
    error = await stream.failure()  # within the helper's wait, though nothing is ever written
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_client_with_the_key_works(address: str) -> None:
    async with EventBusClient(address, api_key=API_KEY, timeout=10) as client:
        async with Consumer(client.subscribe("authed", ["order.*"])) as consumer:
            [result] = await client.publish(event(id="a1"))
            delivery = await consumer.next()
            assert delivery.event.event_id == result.event_id
            await delivery.ack()
        assert (await client.get_event(result.event_id)).event.id == "a1"
        assert [g.name for g in (await client.list_groups())[0]] == ["authed"]
        assert (await client.get_group("authed")).succeeded == 1


async def test_the_client_without_the_key_is_refused(address: str) -> None:
    async with EventBusClient(address, timeout=10) as client:
        with pytest.raises(UnauthenticatedError):
            await client.publish(event(id="a1"))
        with pytest.raises(UnauthenticatedError):
            await client.list_groups()
        with pytest.raises(UnauthenticatedError):
            async with Consumer(client.subscribe("nope", reconnect=False)):
                pass
    async with EventBusClient(address, api_key="ebk_test_wrongwrong", timeout=10) as client:
        with pytest.raises(UnauthenticatedError):
            await client.get_event(source="/shop", id="a1")


async def test_health_and_reflection_stay_open(channel: grpc.aio.Channel) -> None:
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    assert "eventbus.v1.EventBus" in {s.name for s in response.list_services_response.service}
