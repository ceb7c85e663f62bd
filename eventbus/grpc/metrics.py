"""The gRPC metrics interceptor: every call to a registered method counted by method and status code, and timed.

A stream is counted once, when it ends (its duration is its whole life). Calls to methods the server does not
have are not counted: their names are the client's choice, an unbounded label.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from eventbus.metrics.registry import Metrics

Behavior = Callable[..., Any]


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio ships no stubs for it
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        async def call(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> object:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(method, context, error, started)

        return call

    def _stream(self, method: str, behavior: Behavior) -> Behavior:
        if not inspect.isasyncgenfunction(behavior):  # writes with `context.write` and returns: time the coroutine
            return self._unary(method, behavior)

        async def call(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[object]:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(method, context, error, started)

        return call

    def _record(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None, started: float
    ) -> None:
        self._metrics.grpc_call(method, _code_of(context, error), time.perf_counter() - started)


def _code_of(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status the client gets: what the servicer set (abort sets it too), else by how the handler ended."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code != 0:  # some versions hand back the raw number
        return next((str(c.name) for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "UNKNOWN" if error is not None else "OK"
