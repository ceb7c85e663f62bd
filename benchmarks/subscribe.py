"""gRPC consumer groups: `subscribe`, 2 streams of one durable group draining a backlog, acks batched.

Each run: `eventbus serve` on a fresh store; the harness creates the group `bench-run<N>` (a Join that starts at
the latest event, then the stream closes: the group stays); a publisher process (`python -m benchmarks.clients
publish`) sends `events` × scale events (1 KiB JSON data, batches of 1000), each fanned out to the group; then 2
consumer processes (`python -m benchmarks.subscribe consume`) each open one `Subscribe` stream, join the group
(`max_in_flight` each) and ack every `Deliveries` message they get with one `Acks` message (SUCCESS for each),
over the harness's lock-step warm-up and window. Deliveries received in the window, both streams together, are
the figure (cut at the last delivery if the backlog runs out first). Every ack result must be ok. No baseline:
the target is absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks import at_least, profiling, scenario, stores
from benchmarks.harness import (
    BenchContext,
    BenchError,
    Figures,
    LoadWindow,
    RunFigures,
    figures_from_reports,
    run_load,
    tail,
)
from benchmarks.load import CHANNEL_OPTIONS
from benchmarks.publish import servers_log_issues
from benchmarks.webhooks import publisher, run_client, scaled
from eventbus.v1 import eventbus_pb2 as pb

SUBSCRIBE_METHOD = "/eventbus.v1.EventBus/Subscribe"
MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class SubscribeLoad:
    streams: int = 2  # one consumer process each
    max_in_flight: int = 500  # per stream
    events: int = 150_000  # × BENCH_SCALE, published before the consumers start
    batch: int = 1000  # events per Publish call


LOAD = SubscribeLoad()


@scenario(
    "subscribe",
    summary=f"a gRPC consumer group, {LOAD.streams} Subscribe streams from {LOAD.streams} processes "
    f"(max_in_flight {LOAD.max_in_flight} each), every Deliveries message acked with one Acks message; "
    "deliveries/s draining a backlog",
    baseline=None,
    config=asdict(LOAD),
    stores=True,
    targets=(at_least("medians.server.calls_per_s", 10_000, "deliveries/s"),),
)
def subscribe(context: BenchContext, run: int) -> RunFigures:
    server, checks = measure(context, run)
    return RunFigures(server=server, baseline=None, checks=checks)


def subscribe_call(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        SUBSCRIBE_METHOD,
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=pb.SubscribeResponse.FromString,
    )


def join_request(group: str, max_in_flight: int, *, earliest: bool) -> pb.SubscribeRequest:
    edge = pb.StartPosition.EARLIEST if earliest else pb.StartPosition.LATEST
    join = pb.Join(group=group, patterns=["**"], start=pb.StartPosition(edge=edge), max_in_flight=max_in_flight)
    return pb.SubscribeRequest(join=join)


async def create_group(target: str, group: str) -> str:
    """Join once (the group is created, starting at the latest event) and leave: the durable group stays."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = subscribe_call(channel)(iter([join_request(group, 1, earliest=False)]), timeout=30)
        first: pb.SubscribeResponse = await call.read()
        call.cancel()
    if not first.HasField("joined"):
        raise BenchError(f"joining {group} answered {first}")
    return str(first.joined.subscription_id)


def consume_command(target: str, group: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.subscribe", "consume", "--target", target, "--group", group,
        "--max-in-flight", str(LOAD.max_in_flight), "--out", str(out),
    ]  # fmt: skip


def measure(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    directory = context.run_dir(run, "eventbus")
    store = stores.Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[stores.Server] = []
    group = f"bench-run{run}"
    count = scaled(LOAD.events, context.scale, 20 * LOAD.batch)
    try:
        servers = stores.start_servers(context, directory, store)
        target = ",".join(server.grpc for server in servers)
        checks["subscription_id"] = asyncio.run(create_group(servers[0].grpc, group))
        burst = run_client(
            context,
            publisher(target, f"/bench/subscribe/run{run}", "--mode", "burst", "--count", str(count),
                      "--batch", str(LOAD.batch), "--in-flight", "2"),
            role="client", directory=directory, name="publish", times={}, timeout=600,
        )  # fmt: skip
        checks["publish"] = {k: burst[k] for k in ("published", "errors", "error_samples", "seconds")}
        if burst["errors"] or burst["published"] != count:
            raise BenchError(f"{burst['published']} of {count} published, e.g. {burst['error_samples'][:2]}")
        commands = [consume_command(servers[i % len(servers)].grpc, group, directory / f"load-{i}.json") for i in
                    range(LOAD.streams)]  # fmt: skip
        now = time.time()  # the profile (BENCH_PROFILE) covers the consumers' start-up, warm-up and window
        span = LoadWindow(now, now + context.warmup + context.duration + 1)
        profiler = profiling.start(context, run, "subscribe", servers[0].process.pid, span)
        reports, window, server_cpu = run_load(
            context.processes,
            commands,
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=[server.process.pid for server in servers],
        )
        profiling.finish(context, profiler)
    except BenchError as exc:
        issues = servers_log_issues(servers)
        last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
        raise BenchError(
            f"subscribe run {run}: {exc}\neventbus serve log: {issues['server_log_issues']}{last}"
        ) from None
    finally:
        codes = stores.stop_servers(context, servers)
        exit_code = next((code for code in codes if code != 0), 0)
        checks["server_exit_code"] = exit_code
        checks.update(servers_log_issues(servers))
        checks.update(store.drop())
    received = sum(int(r["received"]) for r in reports)
    last_at = max(float(r["last_delivery_at"]) for r in reports)
    if received >= count and last_at < window.end:  # drained before the window ended: count up to then
        checks["backlog_ran_out_at_s"] = round(last_at - window.start, 2)
        if last_at - window.start < 0.5:
            raise BenchError(f"subscribe run {run}: the {count}-event backlog was consumed before the window")
        window.end = last_at
    figures = figures_from_reports(reports, window, server_cpu)
    checks.update(
        {
            "deliveries_received": received,
            "acks_sent": sum(int(r["acked"]) for r in reports),
            "acks_not_ok": sum(int(r["acks_not_ok"]) for r in reports),
            "client_errors": figures.errors,
            "client_error_samples": [s for r in reports for s in r["error_samples"]][:MAX_ERROR_SAMPLES],
        }
    )
    problems = []
    if checks["client_errors"] or checks["acks_not_ok"]:
        problems.append(f"{checks['acks_not_ok']} acks not ok, errors: {checks['client_error_samples']}")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError(f"subscribe run {run}: " + "; ".join(problems))
    return figures, checks


# -- the consumer processes: `python -m benchmarks.subscribe consume ...` -------------------------------------


@dataclass(slots=True)
class ConsumeReport:
    received: int = 0  # deliveries, warm-up and tail included
    acked: int = 0
    acks_not_ok: int = 0
    timed_calls: int = 0  # deliveries received inside the window
    last_delivery_at: float = 0.0
    cpu_s: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)  # none: a stream has no per-call latency
    events_by_second: list[int] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text)


async def consume_main(args: argparse.Namespace) -> int:
    report = ConsumeReport()
    async with grpc.aio.insecure_channel(args.target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=15)
        print("ready", flush=True)
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 120)
        if not line.strip():
            return 3  # the harness went away
        times = json.loads(line)
        warmup_until, end_at = float(times["warmup_until"]), float(times["end_at"])
        report.events_by_second = [0] * max(1, math.ceil(end_at - warmup_until))
        outgoing: asyncio.Queue[pb.SubscribeRequest | None] = asyncio.Queue()
        outgoing.put_nowait(join_request(args.group, args.max_in_flight, earliest=True))

        async def requests() -> Any:
            while (request := await outgoing.get()) is not None:
                yield request

        call = subscribe_call(channel)(requests())

        async def read() -> None:
            async for response in call:
                kind = response.WhichOneof("response")
                if kind == "deliveries":
                    now = time.time()
                    batch = response.deliveries.deliveries
                    report.received += len(batch)
                    report.last_delivery_at = now
                    if warmup_until <= now < end_at:
                        report.timed_calls += len(batch)
                        report.events_by_second[min(len(report.events_by_second) - 1, int(now - warmup_until))] += len(
                            batch
                        )
                    acks = [pb.Ack(delivery_id=d.delivery_id, status=pb.Ack.SUCCESS) for d in batch]
                    report.acked += len(acks)
                    outgoing.put_nowait(pb.SubscribeRequest(acks=pb.Acks(acks=acks)))
                elif kind == "ack_results":
                    report.acks_not_ok += sum(1 for r in response.ack_results.results if not r.ok)

        async def cpu() -> None:
            await asyncio.sleep(max(0.0, warmup_until - time.time()))
            before = time.process_time()
            await asyncio.sleep(max(0.0, end_at - time.time()))
            report.cpu_s = time.process_time() - before

        reader = asyncio.create_task(read())
        await cpu()
        if reader.done() and reader.exception() is not None:
            report.error(f"{type(reader.exception()).__name__}: {reader.exception()}")
        outgoing.put_nowait(None)
        call.cancel()
        try:
            await asyncio.wait_for(reader, 10)
        except (asyncio.CancelledError, grpc.aio.AioRpcError, TimeoutError):
            pass
    Path(args.out).write_text(json.dumps(asdict(report)))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.subscribe", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    consume = commands.add_parser("consume", help="one Subscribe stream of a group, acking each batch")
    consume.add_argument("--target", required=True, help="HOST:PORT of eventbus serve (127.0.0.1 only)")
    consume.add_argument("--group", required=True)
    consume.add_argument("--max-in-flight", type=int, default=LOAD.max_in_flight)
    consume.add_argument("--out", required=True, help="where to write the JSON report (must be last)")
    args = parser.parse_args(argv)
    if not args.target.startswith("127.0.0.1:"):
        parser.error("--target must be on 127.0.0.1: this machine is shared")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(consume_main(parse_args())))
