"""A webhook receiver for the failure tests: records every request (its `webhook-id` and which process sent it)
and answers 200, or holds the request unanswered when `hold(pid)` says so."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Arrival:
    webhook_id: str
    pid: int | None  # the process whose socket sent it (None when /proc could not tell)
    at: float  # wall-clock seconds
    answered: bool  # False: held, never answered


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the client end (127.0.0.1:`local_port` → 127.0.0.1:`remote_port`) of a TCP connection, from
    /proc/net/tcp. Both ends count: one local port may serve connections to several destinations."""
    local, remote = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    return fields[9]
    except OSError:
        return None
    return None


def pid_of_peer(local_port: int, remote_port: int, candidates: list[int]) -> int | None:
    """Which of `candidates` holds the client socket 127.0.0.1:`local_port` → 127.0.0.1:`remote_port` (we are
    root or the same user as the candidates, so their /proc/<pid>/fd links are readable)."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return None
    link = f"socket:[{inode}]"
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return pid
            except OSError:
                continue
    return None


class HookReceiver:
    """aiohttp on 127.0.0.1:0. `senders` are the pids to attribute requests to (None: none of them, e.g. one that
    just died); `hold(pid)`, called as each request arrives, keeps it unanswered (until `close`) when true."""

    def __init__(self, senders: list[int] | None = None, hold: Callable[[int | None], bool] | None = None) -> None:
        self.senders = senders or []
        self.hold = hold or (lambda _pid: False)
        self.arrivals: list[Arrival] = []
        self.changed = asyncio.Condition()
        # By connection (the transport, kept referenced so it is never confused with a later one): its sender.
        self._peers: dict[object, int | None] = {}
        self._release = asyncio.Event()
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
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def answered_ids(self, pid: int | None = None) -> set[str]:
        return {a.webhook_id for a in self.arrivals if a.answered and (pid is None or a.pid == pid)}

    async def wait_until(self, predicate: Callable[[], bool], within: float, what: str | Callable[[], str]) -> None:
        """Until `predicate` holds, at most `within` seconds; `what` (or what it returns, then) names it."""
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"receiver: not within {within:g} s: {what() if callable(what) else what}") from None

    async def happens(self, predicate: Callable[[], bool], within: float) -> bool:
        """Whether `predicate` holds within `within` seconds (no error when it does not)."""
        try:
            await self.wait_until(predicate, within, "")
        except AssertionError:
            return False
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        pid: int | None = None
        if peer is not None and self.senders:
            if transport not in self._peers:
                self._peers[transport] = pid_of_peer(int(peer[1]), self.port, self.senders)
            pid = self._peers[transport]
        webhook_id = request.headers.get("webhook-id", "")
        held = self.hold(pid)
        self.arrivals.append(Arrival(webhook_id, pid, time.time(), answered=not held))
        async with self.changed:
            self.changed.notify_all()
        if held:
            await self._release.wait()  # the sender is killed meanwhile; released only at close
            return web.Response(status=503)
        return web.Response(status=200)
