"""The aiohttp application: `make_app`, health and readiness, request logging, errors as problem+json."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiohttp import web

from eventbus import tracing
from eventbus.auth import KeyRing
from eventbus.bus.service import Bus
from eventbus.http.auth import auth_middleware
from eventbus.http.events import add_routes as add_event_routes
from eventbus.http.metrics import metrics_middleware
from eventbus.http.problems import Handler, problem_middleware, problem_response
from eventbus.logs import request_id_of, scoped_context

log = structlog.get_logger("eventbus.http")

BUS = web.AppKey("bus", Bus)
KEYS = web.AppKey("keys", KeyRing)
READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready")
OPEN_PATHS = ("/healthz", "/readyz")


@web.middleware
async def log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One canonical line per request, with a request id (the caller's if it is sane) bound for everything logged
    meanwhile and unbound after, with whatever the handler bound (event ids); the request's trace context set for
    the events it publishes, and its server span when tracing is on (eventbus/tracing.py)."""
    request_id = request_id_of(request.headers.get("X-Request-Id"))
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    started = time.perf_counter()
    status = 500
    span = tracing.http_server(request.method, route or "unmatched", request.headers, request.remote)
    with scoped_context(request_id=request_id), span:
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set("http.response.status_code", status)
            if status >= 500:
                span.fail(str(status))
            if request.path not in OPEN_PATHS or status >= 400:
                log.info(
                    "http_request",
                    method=request.method,
                    path=request.path,
                    route=route,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                    remote=request.remote,
                )


async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The store answers and both servers are bound (and no shutdown has begun)."""
    if not request.app[READY]():
        return problem_response(503, "Not ready", "the server is starting or shutting down", slug="not-ready")
    try:
        await request.app[BUS].store.ping()
    except Exception as exc:
        return problem_response(503, "Not ready", f"the store does not answer: {exc}", slug="not-ready")
    return web.json_response({"status": "ready"})


def make_app(
    bus: Bus, keys: KeyRing, ready: Callable[[], bool], *, client_max_size: int = 16 * 1024 * 1024
) -> web.Application:
    """The application; later features add their routes to it (inbound webhooks, `/v1`, `/ui/`)."""
    app = web.Application(
        middlewares=[metrics_middleware(bus.metrics), log_middleware, problem_middleware, auth_middleware(keys)],
        client_max_size=client_max_size,
    )
    app[BUS] = bus
    app[KEYS] = keys
    app[READY] = ready
    setup_routes(app)
    return app


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_event_routes(app, BUS, KEYS)
