"""`GET /metrics` (Prometheus text, `admin` unless `--metrics-public`) and the HTTP metrics middleware."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventbus.bus.service import Bus
from eventbus.config import ServerSettings
from eventbus.http.auth import OPENED_ROUTES
from eventbus.http.problems import Handler
from eventbus.metrics.registry import Metrics
from eventbus.metrics.state import StoreState
from eventbus.plugin.manager import Plugins
from eventbus.store.metrics_queries import metrics_queries_of

METRICS_STATE = web.AppKey("metrics_state", StoreState)
METRICS = web.AppKey("metrics", Metrics)
UNMATCHED = "unmatched"  # no route: the raw path is the client's, never a label


def metrics_middleware(metrics: Metrics) -> Middleware:
    """Count and time every request by route template; outermost, so refusals (401, 404, 413) count too."""

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED
            metrics.http_request(route, request.method, status, time.perf_counter() - started)

    return measure


async def get_metrics(request: web.Request) -> web.Response:
    """The registry in the Prometheus text format, with the store gauges at most `ttl` seconds old."""
    state = request.app[METRICS_STATE]
    await state.refresh()
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: web.Application, bus: Bus, plugins: Plugins, settings: ServerSettings) -> StoreState:
    """Add `/metrics` to the server's application (`--metrics-public` opens it to callers without `admin`)."""
    metrics = bus.metrics  # its subscription label cap was set when the bus was made (before any attempt)
    state = StoreState(metrics, metrics_queries_of(bus.store), bus.clock, lambda: plugins.failures_by_hook)
    app[METRICS] = metrics
    app[METRICS_STATE] = state
    if settings.metrics_public:
        app[OPENED_ROUTES] = app.get(OPENED_ROUTES, frozenset()) | {"/metrics"}
    app.router.add_get("/metrics", get_metrics)
    return state
