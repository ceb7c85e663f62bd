"""gRPC health checking and server reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventbus.runtime import EventBusServer


@pytest.mark.parametrize("service", ["", "eventbus.v1.EventBus", "eventbus.v1.Admin"])
async def test_health_check_answers_serving(channel: grpc.aio.Channel, service: str) -> None:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_goes_not_serving_when_the_server_stops(server: EventBusServer, channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await server.grpc.begin_shutdown()
    second = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def _reflect(channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest) -> object:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(request)
    response = await call.read()
    await call.done_writing()
    return response


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    response = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    names = {s.name for s in response.list_services_response.service}
    assert {"eventbus.v1.EventBus", "eventbus.v1.Admin", "grpc.health.v1.Health"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_reflection_describes_the_eventbus_service(channel: grpc.aio.Channel) -> None:
    response = await _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="eventbus.v1.EventBus")
    )
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    assert "eventbus/v1/eventbus.proto" in by_name
    [service] = by_name["eventbus/v1/eventbus.proto"].service
    assert {m.name for m in service.method} == {"Publish", "Subscribe", "GetEvent", "ListEvents"}
