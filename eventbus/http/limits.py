"""Slow clients cannot exhaust the HTTP server: header and body deadlines, a connection cap, and the drain.

aiohttp has a keep-alive timeout but no deadline on a request's headers or on a body that stops arriving, and no
cap on connections: a few hundred clients trickling one byte a minute would each hold a socket and a parser for
ever. Each connection's protocol is wrapped here (`GuardedTCPSite`), so the deadlines run on the event loop with
no task per connection, and one middleware tells the wrapper when a request's headers are in and when it is done.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader

from eventbus.errors import RequestTimeoutError, UnavailableError
from eventbus.http.problems import Handler, problem_middleware, problem_of

log = structlog.get_logger("eventbus.http")

DRAIN_OPEN_PATHS = ("/healthz", "/readyz")  # still answered while the server drains


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Deadlines in seconds. `header_timeout` runs from the connection's first byte (or its opening) to the end of
    the request's headers; `body_idle_timeout` is the longest silence while the handler waits for more body."""

    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    max_connections: int = 1024
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this (aiohttp's own timer)
    backlog: int = 128  # connections the kernel queues before `accept`


def _refusal(status: int, reason: str, detail: str) -> bytes:
    """A whole problem+json response written straight to a socket that has no request handler (yet)."""
    slug = reason.lower().replace(" ", "-")
    problem = {"type": f"https://eventbus.dev/problems/{slug}", "title": reason, "status": status, "detail": detail}
    body = json.dumps(problem).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class HttpGuard:
    """Shared by every connection of one server: the limits, the open connections, the requests in flight."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.draining = False
        self.refused = 0  # connections refused for the cap (since start)
        self.timed_out = 0  # connections closed by a deadline (since start)
        self._connections: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._requests: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def protocol_factory(self, server: web.Server) -> _GuardedConnection:
        return _GuardedConnection(self, server)

    def install(self, app: web.Application) -> None:
        """Add the middleware just inside `problem_middleware` (so a refusal leaves as problem+json), before
        authentication: the headers are in once any handler code runs. Call before the app is frozen."""
        position = list(app.middlewares).index(problem_middleware) + 1
        app.middlewares.insert(position, self._middleware)

    def start_draining(self) -> None:
        """From now on requests other than health checks are refused with 503 (`/readyz` answers 503 too)."""
        self.draining = True

    async def requests_done(self) -> None:
        """Until no request is in flight."""
        await self._idle.wait()

    def cancel_requests(self) -> None:
        """The grace is over: handlers still running are cancelled (their callers see the connection close)."""
        for task in list(self._requests):
            task.cancel()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.draining and request.path not in DRAIN_OPEN_PATHS:
            refused = problem_of(UnavailableError("the server is shutting down: retry, another instance will answer"))
            refused.force_close()  # the client's next try opens a connection, perhaps to another instance
            return refused
        connection = self._connections.get(request.transport) if request.transport is not None else None
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
            self._idle.clear()
        if connection is not None:
            connection.request_started(request.content)
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.request_finished()
            if task is not None:
                self._requests.discard(task)
                if not self._requests:
                    self._idle.set()

    def _opened(self, transport: asyncio.BaseTransport, connection: _GuardedConnection) -> None:
        self._connections[transport] = connection

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        self._connections.pop(transport, None)


class _GuardedConnection(asyncio.Protocol):
    """One connection: refuses it beyond the cap, else hands every callback to aiohttp's request handler and
    closes the connection when a deadline passes."""

    def __init__(self, guard: HttpGuard, server: web.Server) -> None:
        self._guard = guard
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._payload: StreamReader | None = None
        self._in_request = False
        self._last_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        limits = self._guard.limits
        if self._guard.open_connections >= limits.max_connections:
            self._guard.refused += 1
            log.warning("http_connection_refused", open=self._guard.open_connections, limit=limits.max_connections)
            transport.write(_refusal(503, "Service Unavailable", "too many connections: retry shortly"))
            transport.close()
            return
        self._guard._opened(transport, self)
        self._inner = self._server()
        self._inner.connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._inner is not None and self._transport is not None:
            self._guard._closed(self._transport)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        self._last_data = self._loop.time()
        if not self._in_request and self._header_timer is None:
            self._arm_header_deadline()  # the first byte of the next request on a keep-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- called by the middleware ----------------------------------------------------------------------------

    def request_started(self, payload: StreamReader) -> None:
        self._in_request = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not payload.is_eof():
            self._payload = payload
            self._last_data = self._loop.time()
            self._body_timer = self._loop.call_later(self._guard.limits.body_idle_timeout, self._check_body)

    def request_finished(self) -> None:
        self._in_request = False
        self._payload = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- deadlines -------------------------------------------------------------------------------------------

    def _arm_header_deadline(self) -> None:
        self._header_timer = self._loop.call_later(self._guard.limits.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._in_request or self._transport is None or self._transport.is_closing():
            return
        self._guard.timed_out += 1
        log.info("http_header_timeout", timeout_s=self._guard.limits.header_timeout)
        detail = f"the request headers did not arrive within {self._guard.limits.header_timeout:g} s"
        self._transport.write(_refusal(408, "Request Timeout", detail))
        self._transport.close()

    def _check_body(self) -> None:
        self._body_timer = None
        payload, transport = self._payload, self._transport
        if payload is None or payload.is_eof() or transport is None or transport.is_closing():
            return
        idle = self._guard.limits.body_idle_timeout
        silent_for = self._loop.time() - self._last_data
        if silent_for < idle or not transport.is_reading():
            # Data came meanwhile, or aiohttp paused reading because the handler has not consumed what it has
            # (the client is not the slow one): look again later.
            self._body_timer = self._loop.call_later(max(idle - silent_for, 0.05), self._check_body)
            return
        self._guard.timed_out += 1
        log.info("http_body_idle_timeout", timeout_s=idle)
        # The handler's read fails with a 408 problem; the connection closes shortly after, whether or not the
        # client reads that answer (aiohttp would otherwise linger to drain a body that never comes).
        payload.set_exception(RequestTimeoutError(f"no request body received for {idle:g} s"))
        self._loop.call_later(1.0, transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


class GuardedTCPSite(web.TCPSite):
    """`web.TCPSite` whose connections go through the guard (the same socket options otherwise)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: HttpGuard, **kwargs: object) -> None:
        super().__init__(runner, host, port, backlog=guard.limits.backlog, **kwargs)  # type: ignore[arg-type]
        self._guard = guard

    async def start(self) -> None:
        # `TCPSite.start` without its `create_server` call (which would hand aiohttp's protocol factory over bare):
        # registers the site with the runner, then listens with the guard's factory.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            # A TLS handshake comes before any request byte: it gets the header deadline too (asyncio's is 60 s).
            ssl_handshake_timeout=self._guard.limits.header_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
