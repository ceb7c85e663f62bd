"""Raw gRPC stubs on the in-process server (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from eventbus.runtime import EventBusServer
from eventbus.v1 import admin_pb2_grpc, eventbus_pb2_grpc


@pytest.fixture
async def channel(server: EventBusServer) -> AsyncIterator[grpc.aio.Channel]:
    assert server.addresses is not None
    async with grpc.aio.insecure_channel(str(server.addresses.grpc)) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> eventbus_pb2_grpc.EventBusStub:
    return eventbus_pb2_grpc.EventBusStub(channel)


@pytest.fixture
def admin_stub(channel: grpc.aio.Channel) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(channel)
