"""The drain on SIGTERM: stop accepting, then one grace period for everything in flight, cut short by `hurry`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from eventbus.bus.dispatch import Dispatcher
from eventbus.clock import first_of
from eventbus.grpc.server import GrpcServer
from eventbus.http.limits import HttpGuard


async def drain_in_flight(
    *,
    grpc: GrpcServer,
    http: HttpGuard,
    runner: web.AppRunner | None,
    dispatcher: Dispatcher,
    grace: float,
    hurry: asyncio.Event,
) -> None:
    """New gRPC calls are refused at once (UNAVAILABLE), and so are new HTTP requests (503 problem+json,
    `Retry-After`, `Connection: close`) but for `/healthz` and `/readyz`: the HTTP port stays open until the grace
    ends so that a load balancer's readiness probe sees the 503 rather than a refused connection. Requests, calls
    and webhook sends already under way share one grace period, side by side rather than one after another;
    what still runs at its end (or once `hurry` is set: a second signal) is cancelled. A cancelled send is
    recorded as an interrupted attempt and its delivery is due again at once, so the next process sends it
    without waiting for a lease to expire.
    """
    http.start_draining()

    async def grpc_calls() -> None:
        stopping = asyncio.ensure_future(grpc.stop(grace))
        await first_of(asyncio.shield(stopping), hurry.wait())
        if not stopping.done():  # hurried: a second stop with no grace aborts the calls still running
            await grpc.stop(0)
        await stopping

    async def http_requests() -> None:
        await first_of(http.requests_done(), asyncio.sleep(grace), hurry.wait())

    await asyncio.gather(grpc_calls(), http_requests(), dispatcher.stop(grace, hurry=hurry))
    # Only now does the HTTP port close: until everything else is done, readiness probes keep getting their 503.
    http.cancel_requests()
    if runner is not None:
        await runner.cleanup()
