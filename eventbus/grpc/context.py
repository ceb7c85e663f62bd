"""Per-call plumbing shared by the servicers: auth, error mapping, and one canonical log line per call."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from eventbus import tracing
from eventbus.auth import KeyRing, Scope
from eventbus.errors import EventBusError
from eventbus.grpc.errors import status_code_of, to_status
from eventbus.logs import request_id_of, scoped_context

log = structlog.get_logger("eventbus.grpc")
Context = Any  # grpc.aio.ServicerContext (grpcio ships no type information)


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


_CALL_METADATA = frozenset({"authorization", "x-request-id", "traceparent", "tracestate"})


def _call_metadata(context: Context) -> dict[str, str]:
    """The metadata `rpc()` reads, in one pass over the call's metadata."""
    found: dict[str, str] = {}
    for name, value in context.invocation_metadata() or ():
        if name in _CALL_METADATA and name not in found:
            found[name] = value if isinstance(value, str) else value.decode(errors="replace")
    return found


async def _abort(context: Context, error: EventBusError, reply: tuple[tuple[str, str], ...]) -> None:
    """`abort`, with the request id kept in the trailing metadata (an abort replaces what was set before)."""
    status = to_status(error)
    await context.abort(status.code, status.details, (*status.trailing_metadata, *reply))


@asynccontextmanager
async def rpc(
    context: Context, method: str, keys: KeyRing, scope: Scope, *, authorize_later: bool = False
) -> AsyncIterator[Callable[[], None]]:
    """Authorise the call, turn domain errors into statuses, and log one line when it ends. The call's request id
    (the caller's `x-request-id` if sane, else a new one) is bound for every line logged meanwhile and returned in
    the trailing metadata; its trace context (`traceparent` metadata) is set for the events it publishes, with a
    server span when tracing is on (eventbus/tracing.py).

    `authorize_later`: the call authorises itself by calling what this yields (a stream reads its first message
    first: see `Subscribe`)."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    metadata = _call_metadata(context)
    request_id = request_id_of(metadata.get("x-request-id"))
    reply = (("x-request-id", request_id),)
    # Read now: at the end of a stream the call may already be gone (a closing server, a client that left), and
    # `peer()` on a finished call crashes grpc's core (SIGSEGV, seen on shutdown with streams ending).
    peer = context.peer()
    context.set_trailing_metadata(reply)
    span = tracing.grpc_server(method, metadata.get("traceparent"), metadata.get("tracestate"), context.peer)
    with scoped_context(rpc=method, request_id=request_id), span:
        try:
            try:

                def authorize() -> None:
                    keys.authorize(metadata.get("authorization"), scope)

                if not authorize_later:
                    authorize()
                yield authorize
            except EventBusError as exc:
                code = status_code_of(exc)
                await _abort(context, exc, reply)
            except grpc.aio.AbortError:
                raise
            except Exception:
                # A bug: keep the traceback in the log, tell the caller no internals.
                code = grpc.StatusCode.INTERNAL
                log.exception("grpc_handler_failed", method=method)
                await _abort(context, EventBusError("internal error: the server logged it"), reply)
        except BaseException as exc:
            if code is grpc.StatusCode.OK:
                code = _code_of_abort(exc)
            raise
        finally:
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            span.set("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.fail(code.name)
            # Successful unary calls are the hot path (thousands a second): their line is at debug level.
            if code is grpc.StatusCode.OK:
                level = logging.INFO if method == "Subscribe" else logging.DEBUG
            else:
                level = logging.INFO if code is grpc.StatusCode.CANCELLED else logging.WARNING
            if level != logging.DEBUG or log.is_enabled_for(logging.DEBUG):
                log.log(level, "grpc_call", method=method, code=code.name, duration_ms=elapsed, peer=peer)


def _code_of_abort(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    if isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL
