"""The crash harness's webhook receiver, a process of its own so that it outlives every server kill: it answers
each POST (200, or 503 for a seeded few so retries happen too) and reports every request on stdout as one line
`<path> <webhook-id> <status>`, flushed before the answer is sent, so the harness knows all that was answered.

    python -m tests.chaos.receiver --seed 7 --fail-rate 0.03

The first line is `listening <port>` (port 0 was bound).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from aiohttp import web


def make_app(rng: random.Random, fail_rate: float) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        webhook_id = request.headers.get("webhook-id", "-")
        status = 503 if rng.random() < fail_rate else 200
        # Written before answering: a line with 200 means the sender got (or could have got) a success.
        sys.stdout.write(f"{request.path} {webhook_id} {status}\n")
        sys.stdout.flush()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    return app


async def serve(seed: int, fail_rate: float) -> None:
    runner = web.AppRunner(make_app(random.Random(seed), fail_rate), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    sys.stdout.write(f"listening {runner.addresses[0][1]}\n")
    sys.stdout.flush()
    # Until the harness closes our stdin (or dies, which closes it too).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.seed, arguments.fail_rate))


if __name__ == "__main__":
    main()
