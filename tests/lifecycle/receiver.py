"""A webhook receiver for the lifecycle tests: records each request and answers it only when the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web


class GatedReceiver:
    """aiohttp on 127.0.0.1:0. Every request waits for `release` (set: answered at once) and is counted in
    `arrivals` (webhook-id per request) as it comes in; `close` answers what is still held."""

    def __init__(self, *, open_gate: bool = False) -> None:
        self.arrivals: list[str] = []
        self.answered: list[str] = []
        self.release = asyncio.Event()
        if open_gate:
            self.release.set()
        self.changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"receiver: not within {within:g} s: {what}") from None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        async with self.changed:
            self.arrivals.append(webhook_id)
            self.changed.notify_all()
        await self.release.wait()
        async with self.changed:
            self.answered.append(webhook_id)
            self.changed.notify_all()
        return web.Response(status=200, text="ok")
