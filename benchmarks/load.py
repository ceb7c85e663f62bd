"""`python -m benchmarks.load`: one client process of gRPC `Publish` load.

It connects, prints `ready`, reads `{"warmup_until": t0, "end_at": t1}` (wall-clock seconds) from stdin, runs
`--concurrency` tasks that each publish `--events-per-call` events per call back to back until t1, waits for
the calls still in flight, and writes a JSON report to `--out`. Calls completed in [t0, t1) are the measured
ones; every acknowledged event counts toward `acked_events`, which the harness compares with what the server
stored. Each event has a unique (source, id): the source names the process, the id the task and a counter.
With several targets (`--target A,B,C`: several `eventbus serve` processes on one database), task t publishes
to target t mod n.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from eventbus.v1 import cloudevent_pb2 as ce_pb
from eventbus.v1 import eventbus_pb2 as pb

PUBLISH_METHOD = "/eventbus.v1.EventBus/Publish"
CALL_TIMEOUT = 30.0  # seconds; a call slower than this is an error, not a latency
MAX_ERROR_SAMPLES = 5
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


def json_data(size: int) -> str:
    """A JSON object of exactly `size` bytes (at least 64)."""
    head = '{"order_id":"ord-000001","amount":1234,"currency":"EUR","padding":"'
    tail = '"}'
    return head + "x" * max(0, size - len(head) - len(tail)) + tail


def template_event(source: str, data_bytes: int) -> ce_pb.CloudEvent:
    event = ce_pb.CloudEvent(
        source=source, spec_version="1.0", type="bench.order.paid", text_data=json_data(data_bytes)
    )
    event.attributes["datacontenttype"].ce_string = "application/json"
    return event


@dataclass(slots=True)
class LoadReport:
    calls: int = 0  # every call that succeeded, warm-up and tail included
    acked_events: int = 0  # events in those calls
    not_duplicate: int = 0  # results with duplicate=false (when results are checked)
    timed_calls: int = 0  # succeeded inside the window
    timed_events: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time inside the window
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    bad_results: int = 0  # responses whose results do not match the request (count, duplicates)
    latencies_us: list[int] = field(default_factory=list)  # timed calls only
    events_by_second: list[int] = field(default_factory=list)  # events acknowledged in each second of the window

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text)


async def worker(
    publish: grpc.aio.UnaryUnaryMultiCallable,
    template: ce_pb.CloudEvent,
    task: int,
    events_per_call: int,
    check_results: bool,
    warmup_until: float,
    end_at: float,
    report: LoadReport,
) -> None:
    counter = 0
    while time.time() < end_at:
        request = pb.PublishRequest()
        for _ in range(events_per_call):
            event = request.events.add()
            event.CopyFrom(template)
            event.id = f"t{task}-{counter}"
            counter += 1
        began = time.perf_counter()
        try:
            response: pb.PublishResponse = await publish(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            report.error(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.01)  # no hot loop against a failing server
            continue
        latency = time.perf_counter() - began
        done = time.time()
        report.calls += 1
        report.acked_events += events_per_call
        if check_results:
            fresh = sum(1 for r in response.results if not r.duplicate)
            report.not_duplicate += fresh
            if len(response.results) != events_per_call or fresh != events_per_call:
                report.bad_results += 1
                if report.bad_results == 1:
                    report.error(f"bad response: {len(response.results)} results, {fresh} not duplicate")
        if warmup_until <= done < end_at:
            report.timed_calls += 1
            report.timed_events += events_per_call
            report.latencies_us.append(round(latency * 1e6))
            second = int(done - warmup_until)
            if second < len(report.events_by_second):
                report.events_by_second[second] += events_per_call


async def sample_cpu(warmup_until: float, end_at: float, report: LoadReport) -> None:
    await asyncio.sleep(max(0.0, warmup_until - time.time()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, end_at - time.time()))
    report.cpu_s = time.process_time() - before


async def main(args: argparse.Namespace) -> int:
    targets = args.target.split(",")
    async with contextlib.AsyncExitStack() as stack:
        publishers = []
        for target in targets:  # task t publishes to targets[t % len(targets)]
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS))
            await asyncio.wait_for(channel.channel_ready(), timeout=15)
            publishers.append(
                channel.unary_unary(
                    PUBLISH_METHOD,
                    request_serializer=pb.PublishRequest.SerializeToString,
                    response_deserializer=pb.PublishResponse.FromString,
                )
            )
        print("ready", flush=True)
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 120)
        if not line.strip():
            return 3  # the harness went away
        times = json.loads(line)
        warmup_until, end_at = float(times["warmup_until"]), float(times["end_at"])
        report = LoadReport(window_s=end_at - warmup_until)
        report.events_by_second = [0] * max(1, math.ceil(end_at - warmup_until))
        template = template_event(args.source, args.data_bytes)
        tasks = [
            worker(
                publishers[t % len(publishers)],
                template,
                t,
                args.events_per_call,
                args.check_results,
                warmup_until,
                end_at,
                report,
            )
            for t in range(args.concurrency)
        ]
        budget = max(0.0, end_at - time.time()) + CALL_TIMEOUT + 5
        await asyncio.wait_for(asyncio.gather(sample_cpu(warmup_until, end_at, report), *tasks), budget)
    Path(args.out).write_text(json.dumps(asdict(report)))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        required=True,
        help="HOST:PORT of the gRPC server (127.0.0.1 only); several, comma-separated: the tasks take turns",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight at once")
    parser.add_argument("--events-per-call", type=int, default=1)
    parser.add_argument("--data-bytes", type=int, default=1024, help="size of each event's JSON data")
    parser.add_argument("--source", required=True, help="CloudEvents source of this process's events (unique)")
    parser.add_argument("--check-results", action="store_true", help="require one fresh result per event")
    parser.add_argument("--out", required=True, help="where to write the JSON report (must be last)")
    args = parser.parse_args(argv)
    if not all(target.startswith("127.0.0.1:") for target in args.target.split(",")):
        parser.error("--target must be on 127.0.0.1: this machine is shared")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
