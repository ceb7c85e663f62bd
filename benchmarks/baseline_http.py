"""`python -m benchmarks.baseline_http`: the bare aiohttp server the ingest benchmark compares with.

One handler for `POST /hooks/{source}` (and `POST /events`, for `ingest-ce`) that reads the whole body and
answers an empty 202: no verification, no parsing, no store, no logging per request, no access log (like
`eventbus serve`). It runs on the event loop named by `--loop` (the harness passes the one `eventbus serve`
reported), logs one JSON line `{"event": "server_ready", "http": "127.0.0.1:PORT", "loop": ...}` on stderr, and
stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web


async def hook(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


async def serve(listen: str) -> int:
    app = web.Application(client_max_size=1024 * 1024)  # the body limit of /hooks/{source}
    app.router.add_post("/hooks/{source}", hook)
    app.router.add_post("/events", hook)  # the ingest-ce baseline: the same bare handler
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host, int(port), reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        print(json.dumps({"event": "listen_failed", "http": listen, "error": str(exc)}), file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = runner.addresses[0][1]
    ready = {"event": "server_ready", "http": f"{host}:{bound}", "loop": type(loop).__module__.split(".")[0]}
    print(json.dumps(ready), file=sys.stderr, flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def run(main: Coroutine[Any, Any, int], loop: str) -> int:
    if loop == "uvloop":
        import uvloop

        code: int = uvloop.run(main)
        return code
    return asyncio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_http", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 picks one")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the server's event loop")
    args = parser.parse_args()
    if not args.listen.startswith("127.0.0.1:"):
        parser.error("--listen must be on 127.0.0.1: this machine is shared")
    return run(serve(args.listen), args.loop)


if __name__ == "__main__":
    raise SystemExit(main())
