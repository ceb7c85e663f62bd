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
from benchmarks.deliver import attempt_checks
from benchmarks.harness import BenchContext, BenchError, Figures, LoadWindow, RunFigures, cpu_seconds, tail
from benchmarks.publish import servers_log_issues
from benchmarks.webhooks import (
    Receiver,
    create_endpoint,
    latencies_of,
    latency_times,
    paced_args,
    publisher,
    receiver_checks,
    receiver_problems,
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
        issues = servers_log_issues(servers)
        last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
        raise BenchError(
            f"latency run {run}: {exc}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}"
            + "\n" + "\n".join(issues["server_log_samples"]) + last
        ) from None  # fmt: skip
    finally:
        codes = stores.stop_servers(context, servers)
        receiver.stop()
        exit_code = next((code for code in codes if code != 0), 0)
        checks["server_exit_code"] = exit_code
        checks.update(servers_log_issues(servers))
        checks.update(store.drop())
    # The timed part: events published from the end of the warm-up (shifted by the publisher's actual start).
    since = times["warmup_until"] + (paced["started_at"] - times["start_at"])
    latencies = latencies_of(report["arrivals"], since, since + seconds)
    window = LoadWindow(start=since, end=since + seconds)
    whole = paced["finished_at"] - paced["started_at"]  # the CPU was read over the whole paced phase
    figures = throughput_figures(report["arrivals"], window, latencies, sum(used[:-1]) * seconds / whole, 0.0)
    figures.client_cpu_pct = round(used[-1] / whole * 100, 1)
    checks["latency_samples"] = len(latencies)
    checks.update(receiver_checks(report))
    checks.update(attempt_checks(servers))
    problems = receiver_problems(checks)
    if checks["attempts_not_succeeded"]:
        problems.append(f"{checks['attempts_not_succeeded']} delivery attempts did not succeed")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError(f"latency run {run}: " + "; ".join(problems))
    return figures, checks
