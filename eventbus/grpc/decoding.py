"""Undecodable request bytes answered INVALID_ARGUMENT: grpc.aio reports a failing deserializer as UNKNOWN.

A request that is not a valid protobuf message of the method's type is the client's fault, so it gets the status
that says so (DESIGN.md §5), and the servicer never sees it. The deserializer turns the parse error into a marker
value; the wrapped behaviour aborts on the marker before the servicer runs (for a stream of requests, when the
marker is read from it).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

Behavior = Callable[..., Any]


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> object:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return decode


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid protobuf message for {method} (wire format)"
    )


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio ships no stubs
    """Answers requests whose bytes do not parse with INVALID_ARGUMENT instead of UNKNOWN."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = handler_call_details.method
        decode = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_one(method, handler.unary_unary), decode, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_one(method, handler.unary_stream), decode, serialize)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_many(method, handler.stream_unary), decode, serialize)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(_many(method, handler.stream_stream), decode, serialize)
        return handler


def _one(method: str, behavior: Behavior) -> Behavior:
    """One request: checked before the servicer is called (an async generator stays one, grpc.aio tells them apart)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[object]:
            if request is _UNDECODABLE:
                await _refuse(context, method)
            async for response in behavior(request, context):
                yield response

        return stream

    async def call(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> object:
        if request is _UNDECODABLE:
            await _refuse(context, method)
        return await behavior(request, context)

    return call


def _many(method: str, behavior: Behavior) -> Behavior:
    """A stream of requests: each is checked as the servicer reads it."""

    async def checked(
        requests: AsyncIterator[object], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[object]:
        async for request in requests:
            if request is _UNDECODABLE:
                await _refuse(context, method)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def stream(
            requests: AsyncIterator[object], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[object]:
            async for response in behavior(checked(requests, context), context):
                yield response

        return stream

    async def call(requests: AsyncIterator[object], context: grpc.aio.ServicerContext[Any, Any]) -> object:
        return await behavior(checked(requests, context), context)

    return call
