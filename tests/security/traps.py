"""Loopback HTTP servers that must never be reached (traps), and one that redirects to them: the SSRF tests'
targets. Each records every request it gets."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Trap:
    """An aiohttp server on `host`:0; `redirect_to` makes every answer a redirect there (with `status`)."""

    host: str
    redirect_to: str | None = None
    status: int = 302
    hits: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> Trap:
        async def handle(request: web.Request) -> web.Response:
            self.hits.append(f"{request.method} {request.host}{request.path_qs}")
            if self.redirect_to is not None:
                return web.Response(status=self.status, headers={"Location": self.redirect_to})
            return web.Response(text="the trap was reached")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, host: str | None = None, path: str = "/hook") -> str:
        shown = host if host is not None else (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{shown}:{self.port}{path}"


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
