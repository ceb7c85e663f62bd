"""`python -m benchmarks.clients publish|send`: the client processes of the webhook scenarios.

- `publish`: gRPC `Publish` of events whose 1 KiB JSON data carries the wall-clock time the call was built
  (`published_at`), paced (`--rate` events/s in calls of `--batch`) or as a burst of `--count` events
  (`--in-flight` calls at once); several `--target`s take turns.
- `send`: the bare baseline of delivery: an aiohttp `ClientSession` POSTing bodies of the `standard` payload
  format, signed as eventbus signs them (Standard Webhooks `v1`), paced or back to back with `--concurrency` at
  once; several `--url`s (comma-separated) take turns.

Both print `ready`, read `{"start_at": .., "warmup_until": .., "end_at": ..}` (wall-clock seconds) from stdin, run,
and write a JSON report to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENT_TYPE = "bench.order.paid"
MAX_ERROR_SAMPLES = 5
DATA_BYTES = 1024
DEFAULT_CONCURRENCY = 10  # WebhookKind.default_max_concurrency (not imported: these processes stay light)


@dataclass(slots=True)
class ClientReport:
    published: int = 0  # events acknowledged (publish) / POSTs answered 200 (send: `sent`)
    sent: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0
    seconds: float = 0.0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text)


def event_data(published_at: float, number: int, size: int) -> str:
    """JSON data of exactly `size` bytes that carries the publish time."""
    head = f'{{"published_at":{published_at:.6f},"n":{number},"padding":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


async def read_times() -> dict[str, float]:
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 120)
    if not line.strip():
        raise SystemExit(3)  # the harness went away
    times: dict[str, float] = json.loads(line)
    return times


async def paced_ticks(times: dict[str, float], batch: int, rate: float, fire: Any, report: ClientReport) -> None:
    """Call `fire(published_at, first_number)` every batch/rate seconds from start_at until end_at."""
    interval = batch / rate
    report.started_at = times["start_at"]
    pending: set[asyncio.Task[None]] = set()
    tick = 0
    while (at := times["start_at"] + tick * interval) < times["end_at"]:
        await asyncio.sleep(max(0.0, at - time.time()))
        task = asyncio.create_task(fire(time.time(), tick * batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
        tick += 1
    if pending:
        await asyncio.wait(pending, timeout=60)
    report.finished_at = time.time()


async def publish_main(args: argparse.Namespace) -> int:
    import grpc

    from benchmarks.load import CALL_TIMEOUT, CHANNEL_OPTIONS, PUBLISH_METHOD, template_event
    from eventbus.v1 import eventbus_pb2 as pb

    report = ClientReport()
    template = template_event(args.source, args.data_bytes)

    def request_of(published_at: float, first: int, count: int) -> pb.PublishRequest:
        request = pb.PublishRequest()
        for number in range(first, first + count):
            event = request.events.add()
            event.CopyFrom(template)
            event.id = str(number)
            event.text_data = event_data(published_at, number, args.data_bytes)
        return request

    async with contextlib.AsyncExitStack() as stack:
        publishers = []
        for target in args.target.split(","):  # several servers: the calls take turns
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS))
            await asyncio.wait_for(channel.channel_ready(), timeout=15)
            publishers.append(
                channel.unary_unary(
                    PUBLISH_METHOD,
                    request_serializer=pb.PublishRequest.SerializeToString,
                    response_deserializer=pb.PublishResponse.FromString,
                )
            )
        turns = itertools.cycle(publishers)

        async def call(request: pb.PublishRequest) -> None:
            try:
                response: pb.PublishResponse = await next(turns)(request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                report.error(f"{exc.code().name}: {exc.details()}")
                return
            fresh = sum(1 for r in response.results if not r.duplicate)
            if fresh != len(request.events):
                report.error(f"{fresh} of {len(request.events)} events answered duplicate=false")
            report.published += fresh

        print("ready", flush=True)
        times = await read_times()
        if args.mode == "paced":

            async def fire(published_at: float, first: int) -> None:
                await call(request_of(published_at, first, args.batch))

            await paced_ticks(times, args.batch, args.rate, fire, report)
        else:
            report.started_at = time.time()
            batches = iter(range(0, args.count, args.batch))

            async def worker() -> None:
                for first in batches:
                    await call(request_of(time.time(), first, min(args.batch, args.count - first)))

            await asyncio.gather(*(worker() for _ in range(args.in_flight)))
            report.finished_at = time.time()
    report.seconds = round(report.finished_at - report.started_at, 3)
    Path(args.out).write_text(json.dumps(asdict(report)))
    return 0


async def send_main(args: argparse.Namespace) -> int:
    import aiohttp

    text = args.secret.removeprefix("whsec_")
    key = base64.b64decode(text + "=" * (-len(text) % 4))
    report = ClientReport()
    prefix = f'{{"type":"{EVENT_TYPE}","timestamp":"'

    urls = args.url.split(",")  # several endpoints: the POSTs take turns

    async def post(session: aiohttp.ClientSession, published_at: float, number: int) -> None:
        data = event_data(published_at, number, args.data_bytes)
        stamp = datetime.fromtimestamp(published_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = f'{prefix}{stamp}","data":{data}}}'.encode()
        msg_id = f"msg_{args.id_prefix}{number}"
        now = str(int(time.time()))
        digest = hmac.new(key, f"{msg_id}.{now}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": now,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }
        try:
            async with session.post(urls[number % len(urls)], data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    report.error(f"HTTP {response.status}")
                    return
        except (aiohttp.ClientError, OSError) as exc:
            report.error(f"{type(exc).__name__}: {exc}")
            return
        report.sent += 1

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        print("ready", flush=True)
        times = await read_times()
        if args.mode == "paced":
            slots = asyncio.Semaphore(args.concurrency)

            async def one(published_at: float, number: int) -> None:
                async with slots:
                    await post(session, published_at, number)

            async def fire(published_at: float, first: int) -> None:
                await asyncio.gather(*(one(published_at, first + i) for i in range(args.batch)))

            await paced_ticks(times, args.batch, args.rate, fire, report)
        else:
            report.started_at = time.time()
            numbers = iter(range(10**12))

            async def worker() -> None:
                while time.time() < times["end_at"]:
                    await post(session, time.time(), next(numbers))

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            report.finished_at = time.time()
    report.seconds = round(report.finished_at - report.started_at, 3)
    Path(args.out).write_text(json.dumps(asdict(report)))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clients", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mode", choices=["paced", "burst", "loop"], required=True)
    common.add_argument("--rate", type=float, default=200.0, help="paced: events per second")
    common.add_argument("--batch", type=int, default=10, help="events per call / per tick")
    common.add_argument("--data-bytes", type=int, default=DATA_BYTES)
    common.add_argument("--out", required=True, help="where to write the JSON report")
    publish = commands.add_parser("publish", parents=[common], help="gRPC Publish, paced or a burst of --count")
    publish.add_argument(
        "--target", required=True, help="HOST:PORT of eventbus serve (127.0.0.1 only); several, comma-separated"
    )
    publish.add_argument("--source", required=True, help="CloudEvents source (unique per phase)")
    publish.add_argument("--count", type=int, default=0, help="burst: events to publish")
    publish.add_argument("--in-flight", type=int, default=1, help="burst: Publish calls at once")
    send = commands.add_parser("send", parents=[common], help="the baseline: signed POSTs, paced or back to back")
    send.add_argument("--url", required=True, help="the receiver (127.0.0.1 only); several, comma-separated")
    send.add_argument("--secret", required=True, help="whsec_ secret to sign with")
    send.add_argument("--id-prefix", required=True, help="webhook-id prefix (unique per phase)")
    send.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="POSTs at once")
    args = parser.parse_args(argv)
    places = args.target if args.command == "publish" else args.url.replace("http://", "")
    where = places.split(",")
    if not all(w.startswith("127.0.0.1:") for w in where):
        parser.error("only 127.0.0.1: this machine is shared")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(publish_main(args) if args.command == "publish" else send_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
