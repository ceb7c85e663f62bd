"""Per-call plumbing shared by the servicers: auth, error mapping, and one canonical log line per call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from eventbus.auth import KeyRing, Scope
from eventbus.errors import EventBusError
from eventbus.grpc.errors import abort, status_code_of

log = structlog.get_logger("eventbus.grpc")
Context = Any  # grpc.aio.ServicerContext (grpcio ships no type information)


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


@asynccontextmanager
async def rpc(context: Context, method: str, keys: KeyRing, scope: Scope) -> AsyncIterator[None]:
    """Authorise the call, turn domain errors into statuses, and log one line when it ends."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    structlog.contextvars.bind_contextvars(rpc=method)
    try:
        try:
            keys.authorize(metadata_value(context, "authorization"), scope)
            yield
        except EventBusError as exc:
            code = status_code_of(exc)
            await abort(context, exc)
        except grpc.aio.AbortError:
            raise
        except Exception:
            # A bug: keep the traceback in the log, tell the caller no internals.
            code = grpc.StatusCode.INTERNAL
            log.exception("grpc_handler_failed", method=method)
            await abort(context, EventBusError("internal error: the server logged it"))
    except BaseException as exc:
        if code is grpc.StatusCode.OK:
            code = _code_of_abort(exc)
        raise
    finally:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        # Successful unary calls are the hot path (thousands a second): their line is at debug level.
        if code is grpc.StatusCode.OK:
            level = log.info if method == "Subscribe" else log.debug
        else:
            level = log.info if code is grpc.StatusCode.CANCELLED else log.warning
        level("grpc_call", method=method, code=code.name, duration_ms=elapsed)
        structlog.contextvars.unbind_contextvars("rpc")


def _code_of_abort(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    if isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL
