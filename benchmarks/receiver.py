"""`python -m benchmarks.receiver`: the bare webhook receiver of the `delivery` scenario.

An aiohttp server answering every `POST /hook` (and `POST /hook/{endpoint}`, for several endpoints on one
receiver) with an empty 200 at once. For each request it records the
arrival time and the `published_at` the sender embedded in the event's data (body `{"data": {...}}`, the
`standard` payload format), checks the Standard Webhooks `v1` signature when `--secret` is given, and counts
repeated `webhook-id`s per path (one event goes to each endpoint under the same id). With `--fd N` it
listens on the bound socket it inherited (the `backlog` scenario binds the port while "the receiver is down").
It prints `{"event": "receiver_ready", "port": PORT}` on stdout, then answers commands
read from stdin, one per line:

- `count`: prints `{"received": N}`;
- `report PATH`: writes every record so far (`[arrival, published_at]` pairs, wall-clock seconds) and the
  counters as JSON to PATH, then prints `{"written": N}`.

It stops when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass(slots=True)
class Records:
    key: bytes | None  # the HMAC key of the endpoint's secret; None: signatures are not checked
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (arrival, published_at)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0  # requests whose webhook-id was seen before
    unsigned: int = 0  # no webhook-id / webhook-timestamp / webhook-signature header
    bad_signatures: int = 0
    bad_bodies: int = 0  # not JSON, or no data.published_at

    def report(self) -> dict[str, object]:
        return {
            "received": len(self.arrivals),
            "distinct_ids": len(self.ids),
            "duplicates": self.duplicates,
            "unsigned": self.unsigned,
            "bad_signatures": self.bad_signatures,
            "bad_bodies": self.bad_bodies,
            "arrivals": [(round(a, 6), round(p, 6)) for a, p in self.arrivals],
        }


def secret_key(secret: str) -> bytes:
    text = secret.removeprefix("whsec_")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def make_app(records: Records) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        msg_id = request.headers.get("webhook-id")
        stamp = request.headers.get("webhook-timestamp")
        signatures = request.headers.get("webhook-signature")
        if msg_id is None or stamp is None or signatures is None:
            records.unsigned += 1
        elif records.key is not None:
            digest = hmac.new(records.key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
            if "v1," + base64.b64encode(digest).decode() not in signatures.split():
                records.bad_signatures += 1
        if msg_id is not None:
            key = f"{request.path} {msg_id}"
            if key in records.ids:
                records.duplicates += 1
            records.ids.add(key)
        try:
            published = float(json.loads(body)["data"]["published_at"])
        except (ValueError, KeyError, TypeError):
            records.bad_bodies += 1
            published = float("nan")
        records.arrivals.append((arrived, published))
        return web.Response(status=200)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/hook", hook)
    app.router.add_post("/hook/{endpoint}", hook)
    return app


async def commands(records: Records, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while not stop.is_set():
        line = (await stdin.readline()).decode()
        if not line:  # the harness went away
            stop.set()
            return
        command, _, argument = line.strip().partition(" ")
        if command == "count":
            answer: dict[str, object] = {"received": len(records.arrivals)}
        elif command == "report":
            report = records.report()
            Path(argument).write_text(json.dumps(report))
            answer = {"written": report["received"]}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


async def serve(listen: str, secret: str | None, fd: int | None) -> int:
    records = Records(key=secret_key(secret) if secret else None)
    runner = web.AppRunner(make_app(records), access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if fd is not None:
        site = web.SockSite(runner, socket.socket(fileno=fd), backlog=1024)
    else:
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(runner, host, int(port), backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "receiver_ready", "port": runner.addresses[0][1]}), flush=True)
    reader = asyncio.create_task(commands(records, stop))
    await stop.wait()
    reader.cancel()
    await runner.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 picks one")
    parser.add_argument("--secret", help="the endpoint's whsec_ secret: check every v1 signature")
    parser.add_argument("--fd", type=int, help="listen on this inherited, bound socket instead of --listen")
    args = parser.parse_args()
    if not args.listen.startswith("127.0.0.1:"):
        parser.error("--listen must be on 127.0.0.1: this machine is shared")
    return asyncio.run(serve(args.listen, args.secret, args.fd))


if __name__ == "__main__":
    raise SystemExit(main())
