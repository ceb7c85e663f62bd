"""A scope that ends in another context — a gRPC stream's async generator closed by the loop for a stopping server —
ends quietly: before, resetting its context variables raised ValueError from the loop's finaliser task, logged as
"Task exception was never retrieved" (found by the subscribe benchmark)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator

import structlog

from eventbus import tracing
from eventbus.logs import scoped_context


def _stream() -> Iterator[None]:
    with scoped_context(rpc="Subscribe", request_id="r1"), tracing.grpc_server("Subscribe", None, None, lambda: "p"):
        yield


def test_a_scope_closed_from_another_context_ends_without_an_error() -> None:
    stream = _stream()
    contextvars.copy_context().run(next, stream)  # entered in one context ...
    contextvars.copy_context().run(stream.close)  # ... and closed in another: no ValueError
    assert "request_id" not in structlog.contextvars.get_contextvars()
