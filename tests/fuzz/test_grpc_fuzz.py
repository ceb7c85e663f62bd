"""gRPC with raw bytes: malformed protobuf to every unary RPC is INVALID_ARGUMENT (or another deliberate status,
never UNKNOWN or INTERNAL), a message over 16 MiB is RESOURCE_EXHAUSTED, and the server keeps serving after all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from hypothesis import given
from hypothesis import strategies as st

from eventbus.grpc.server import MAX_MESSAGE_BYTES
from eventbus.runtime import EventBusServer
from eventbus.v1 import admin_pb2, cloudevent_pb2, eventbus_pb2  # noqa: F401 - registers the descriptors
from tests.fuzz.profiles import fuzz

# Bugs look like these: an exception escaped the servicer (UNKNOWN) or the runtime broke (INTERNAL).
BROKEN = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
PUBLISH = "/eventbus.v1.EventBus/Publish"


def unary_methods() -> list[str]:
    pool = descriptor_pool.Default()
    paths = []
    for service in ("eventbus.v1.EventBus", "eventbus.v1.Admin"):
        descriptor = pool.FindServiceByName(service)
        paths += [
            f"/{service}/{m.name}" for m in descriptor.methods if not m.client_streaming and not m.server_streaming
        ]
    return sorted(paths)


UNARY = unary_methods()


@pytest.fixture
async def channel(server: EventBusServer) -> AsyncIterator[grpc.aio.Channel]:
    assert server.addresses is not None
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]  # so the server, not the client, refuses
    async with grpc.aio.insecure_channel(str(server.addresses.grpc), options=options) as opened:
        yield opened


async def call_raw(channel: grpc.aio.Channel, path: str, payload: bytes) -> grpc.StatusCode:
    """Send `payload` as the serialised request, unchecked by any client-side encoder."""
    try:
        await channel.unary_unary(path, request_serializer=None, response_deserializer=None)(payload, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def still_serving(channel: grpc.aio.Channel) -> None:
    event = cloudevent_pb2.CloudEvent(id="alive", source="/fuzz", spec_version="1.0", type="fuzz.alive")
    request = eventbus_pb2.PublishRequest(events=[event]).SerializeToString()
    assert await call_raw(channel, PUBLISH, request) == grpc.StatusCode.OK


# Truncations and corruptions of a valid request are nearer to what the parser must survive than random noise.
VALID = eventbus_pb2.PublishRequest(
    events=[cloudevent_pb2.CloudEvent(id="1", source="/s", spec_version="1.0", type="a.b", text_data="x")]
).SerializeToString()
payloads = st.one_of(
    st.binary(max_size=300),
    st.integers(0, len(VALID)).map(lambda n: VALID[:n]),
    st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)).map(
        lambda p: VALID[: p[0]] + bytes([VALID[p[0]] ^ p[1]]) + VALID[p[0] + 1 :]
    ),
)


@fuzz(200)
@given(path=st.sampled_from(UNARY), payload=payloads)
async def test_malformed_protobuf_to_any_rpc_is_refused_cleanly(
    channel: grpc.aio.Channel, path: str, payload: bytes
) -> None:
    code = await call_raw(channel, path, payload)
    assert code not in BROKEN, (path, payload, code)


async def test_invalid_wire_bytes_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    for payload in (b"\xff", b"\x0a\xff\xff\xff\xff\x0f", VALID[:-1], b"\x0a\x05\x0a\x03\xff\xfe\xfd"):
        assert await call_raw(channel, PUBLISH, payload) == grpc.StatusCode.INVALID_ARGUMENT, payload
    await still_serving(channel)


async def test_an_oversized_message_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    big = cloudevent_pb2.CloudEvent(
        id="big", source="/s", spec_version="1.0", type="a.b", binary_data=b"x" * (MAX_MESSAGE_BYTES + 1024)
    )
    payload = eventbus_pb2.PublishRequest(events=[big]).SerializeToString()
    assert await call_raw(channel, PUBLISH, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED
    await still_serving(channel)


async def test_a_large_event_under_the_message_limit_is_refused_by_the_event_limit(channel: grpc.aio.Channel) -> None:
    big = cloudevent_pb2.CloudEvent(id="big", source="/s", spec_version="1.0", type="a.b", binary_data=b"x" * 2**21)
    payload = eventbus_pb2.PublishRequest(events=[big]).SerializeToString()
    assert await call_raw(channel, PUBLISH, payload) in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    await still_serving(channel)


async def test_malformed_bytes_on_the_subscribe_stream_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    stream = channel.stream_stream(
        "/eventbus.v1.EventBus/Subscribe", request_serializer=None, response_deserializer=None
    )(timeout=30)
    await stream.write(b"\xff\xff")
    assert await stream.code() == grpc.StatusCode.INVALID_ARGUMENT
    await still_serving(channel)
