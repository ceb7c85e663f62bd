"""Publish → webhook received: `latency`, events published at a steady 500 events/s and delivered to one endpoint.

Each run: a receiver process (`benchmarks.receiver`) and a fresh store with one webhook endpoint pointing at it
(patterns `**`, `standard` format, the kind's default concurrency); `eventbus serve` starts; a publisher process
(`python -m benchmarks.clients publish --mode paced`) sends `batch` events per call at `rate` events/s for a
warm-up and the timed window. Every event's 1 KiB JSON data carries the wall-clock time its call was built; the
receiver records when it arrived, so latency is per event: publish call built → webhook received, over the
events published in the window. Every event must then arrive within 30 s. No baseline: the targets are absolute.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import at_most, profiling, scenario, stores
from benchmarks.deliver import delivery_problems, run_failed, stop_all
from benchmarks.harness import BenchContext, BenchError, Figures, LoadWindow, RunFigures, cpu_seconds
from benchmarks.webhooks import (
    Receiver,
    create_endpoint,
    latencies_of,
    latency_times,
    paced_args,
    publisher,
    run_client,
    start_servers,
    throughput_figures,
)


@dataclass(frozen=True, slots=True)
class LatencyLoad:
    rate: float = 500.0  # events/s offered
    batch: int = 10  # events per Publish call (50 calls/s)


LOAD = LatencyLoad()


@scenario(
    "latency",
    summary=f"{LOAD.rate:g} events/s steady ({LOAD.batch} per gRPC Publish), each delivered as a signed webhook to "
    "one endpoint on a bare aiohttp receiver; publish → received per event",
    baseline=None,
    config=asdict(LOAD),
    stores=True,
    targets=(
        at_most("medians.server.p50_ms", 5.0, "p50 ms publish→received"),
        at_most("medians.server.p99_ms", 50.0, "p99 ms publish→received"),
    ),
)
def latency(context: BenchContext, run: int) -> RunFigures:
    server, checks = measure(context, run)
    return RunFigures(server=server, baseline=None, checks=checks)


def measure(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    secret = generate_secret()
    receiver = Receiver(context, directory, secret)
    store = stores.Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[stores.Server] = []
    try:
        create_endpoint(store.url, receiver.url, secret)
        servers = start_servers(context, directory, store)
        target = ",".join(server.grpc for server in servers)
        times, seconds = latency_times(context.warmup, context.duration)
        pids = [*(s.process.pid for s in servers), receiver.process.pid]
        before = [cpu_seconds(pid) for pid in pids]
        now = time.time()  # the profile (BENCH_PROFILE) covers the whole paced phase
        profiler = profiling.start(
            context, run, "latency", servers[0].process.pid, LoadWindow(now, now + times["end_at"])
        )
        paced = run_client(
            context, publisher(target, f"/bench/latency/run{run}", *paced_args(LOAD.rate, LOAD.batch)),
            role="client", directory=directory, name="publish", times=times, timeout=times["end_at"] + 60,
        )  # fmt: skip
        used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        profiling.finish(context, profiler)
        checks["published"], checks["publish_errors"] = paced["published"], paced["errors"]
        arrived = receiver.wait_for(paced["published"], timeout=30)
        checks["received_within_30s"] = arrived
        if paced["errors"] or arrived < paced["published"]:
            raise BenchError(
                f"{paced['published']} events published ({paced['errors']} calls failed, e.g. "
                f"{paced['error_samples'][:2]}), {arrived} delivered within 30 s"
            )
        report = receiver.report(directory / "received.json")
    except BenchError as exc:
        raise run_failed("latency", run, exc, servers) from None
    finally:
        exit_code = stop_all(context, servers, receiver, checks)
        checks.update(store.drop())
    # The timed part: events published from the end of the warm-up (shifted by the publisher's actual start).
    since = times["warmup_until"] + (paced["started_at"] - times["start_at"])
    latencies = latencies_of(report["arrivals"], since, since + seconds)
    window = LoadWindow(start=since, end=since + seconds)
    whole = paced["finished_at"] - paced["started_at"]  # the CPU was read over the whole paced phase
    figures = throughput_figures(report["arrivals"], window, latencies, sum(used[:-1]) * seconds / whole, 0.0)
    figures.client_cpu_pct = round(used[-1] / whole * 100, 1)
    checks["latency_samples"] = len(latencies)
    problems = delivery_problems(checks, report, servers, exit_code)
    if problems:
        raise BenchError(f"latency run {run}: " + "; ".join(problems))
    return figures, checks
