"""Webhook delivery throughput: `deliver` (1 endpoint) and `deliver-10` (10 endpoints), events delivered, signed,
to a bare aiohttp receiver in its own process.

Each run, for eventbus: a receiver process (`benchmarks.receiver`) starts; a fresh store (SQLite, or PostgreSQL
with `BENCH_STORE`: `benchmarks.stores`) gets the endpoints (patterns `**`, `standard` format, the kind's default
concurrency, one path each on the receiver, one secret); `eventbus serve` starts on it. A publisher process
(`python -m benchmarks.clients publish`) sends a backlog of `deliveries ÷ endpoints` events (1 KiB JSON data,
batches of 100) as fast as the server takes them; a warm-up after its last call, deliveries are counted at the
receiver over the timed window (cut at the last delivery if the backlog runs out first).

The baseline (`python -m benchmarks.clients send`, pinned where the server was: it stands in for the server) is a
bare aiohttp `ClientSession` loop POSTing bodies of the same shape, signed the same way, to the same paths of its
own fresh receiver, with as many requests at once as the endpoints have together (endpoints × 10).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import at_least, profiling, scenario, stores
from benchmarks.harness import BenchContext, BenchError, Figures, LoadWindow, RunFigures, read_json_log, tail
from benchmarks.publish import servers_log_issues
from benchmarks.webhooks import (
    ENDPOINT_CONCURRENCY,
    Receiver,
    create_endpoints,
    finish,
    go,
    publisher,
    receiver_checks,
    receiver_problems,
    scaled,
    sender,
    start_client,
    start_servers,
    throughput_figures,
    timed_cpu,
)


@dataclass(frozen=True, slots=True)
class DeliverLoad:
    endpoints: int
    deliveries: int = 30_000  # × BENCH_SCALE: the backlog, in deliveries (events = deliveries ÷ endpoints)
    batch: int = 100  # events per Publish call
    in_flight: int = 4  # Publish calls at once
    concurrency: int = ENDPOINT_CONCURRENCY  # per endpoint (the kind's default); the baseline: × endpoints


ONE = DeliverLoad(endpoints=1)
TEN = DeliverLoad(endpoints=10)


def _notes(report: dict[str, Any]) -> list[str]:
    extra = report.get("extra") or {}
    line = (
        f"{report['scenario']}: deliveries/s at the receiver while draining a backlog "
        f"({report['config']['endpoints']} endpoint(s)); p50/p99: per delivery as the receiver saw it arrive after "
        "its publish (backlog: queueing, not latency)"
    )
    lines = [line]
    if extra.get("backlog_ran_out_at_s"):
        lines.append(f"{report['scenario']}: the backlog ran out {extra['backlog_ran_out_at_s']:.1f} s into the window")
    return lines


def _scenario(load: DeliverLoad, name: str) -> None:
    @scenario(
        name,
        summary=f"events (1 KiB JSON data) published over gRPC and delivered as signed webhooks to {load.endpoints} "
        f"endpoint(s) on a bare aiohttp receiver, {load.concurrency} at once each; deliveries/s draining a backlog",
        baseline=f"bare aiohttp ClientSession loop, {load.concurrency * load.endpoints} POSTs at once, same signed "
        "bodies, same receiver paths",
        config=asdict(load),
        notes=_notes,
        stores=True,
        targets=(
            at_least("medians.server.calls_per_s", 3000, "deliveries/s"),
            at_least("ratio", 0.50, "deliveries/s ratio"),
        ),
    )
    def run(context: BenchContext, run: int) -> RunFigures:
        server, checks = measure_eventbus(name, load, context, run)
        baseline, baseline_checks = measure_baseline(name, load, context, run)
        checks["baseline"] = baseline_checks
        extra = {"backlog_ran_out_at_s": checks["backlog_ran_out_at_s"]} if "backlog_ran_out_at_s" in checks else {}
        return RunFigures(server=server, baseline=baseline, checks=checks, extra=extra)


_scenario(ONE, "deliver")
_scenario(TEN, "deliver-10")


def endpoint_urls(receiver: Receiver, endpoints: int) -> list[str]:
    return [receiver.url] if endpoints == 1 else [f"{receiver.url}/{n}" for n in range(endpoints)]


def attempt_checks(servers: list[stores.Server]) -> dict[str, int]:
    attempts = [r for s in servers for r in read_json_log(s.log_path) if r.get("event") == "delivery_attempted"]
    return {
        "attempts_logged": len(attempts),
        "attempts_not_succeeded": sum(1 for r in attempts if r.get("outcome") != "succeeded"),
    }


def run_failed(name: str, run: int, error: BenchError, servers: list[stores.Server]) -> BenchError:
    """A webhook scenario's failed run, with what the servers logged."""
    issues = servers_log_issues(servers)
    last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
    return BenchError(
        f"{name} run {run}: {error}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}"
        + "\n" + "\n".join(issues["server_log_samples"]) + last
    )  # fmt: skip


def stop_all(context: BenchContext, servers: list[stores.Server], receiver: Receiver, checks: dict[str, Any]) -> int:
    """Stop the servers (SIGTERM) and the receiver; record the servers' exit and log issues. Returns the exit code."""
    codes = stores.stop_servers(context, servers)
    receiver.stop()
    exit_code = next((code for code in codes if code != 0), 0)
    checks["server_exit_code"] = exit_code
    checks.update(servers_log_issues(servers))
    return exit_code


def delivery_problems(
    checks: dict[str, Any], report: dict[str, Any], servers: list[stores.Server], exit_code: int
) -> list[str]:
    """What fails a webhook run: the receiver's checks, attempts that did not succeed, server log warnings or
    errors, a server that did not exit 0 on SIGTERM."""
    checks.update(receiver_checks(report))
    checks.update(attempt_checks(servers))
    problems = receiver_problems(checks)
    if checks["attempts_not_succeeded"]:
        problems.append(f"{checks['attempts_not_succeeded']} delivery attempts did not succeed")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    return problems


def measure_eventbus(name: str, load: DeliverLoad, context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    secret = generate_secret()
    receiver = Receiver(context, directory, secret)
    store = stores.Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[stores.Server] = []
    events = scaled(load.deliveries, context.scale, 20 * load.batch) // load.endpoints
    try:
        create_endpoints(store.url, endpoint_urls(receiver, load.endpoints), secret)
        servers = start_servers(context, directory, store)
        target = ",".join(server.grpc for server in servers)  # publish calls take turns over the processes
        out_path, log_path = directory / "publish.json", directory / "publish.log"
        command = publisher(
            target, f"/bench/{name}/run{run}", "--mode", "burst", "--count", str(events),
            "--batch", str(load.batch), "--in-flight", str(load.in_flight), "--out", str(out_path),
        )  # fmt: skip
        process = start_client(context, command, role="client", log_path=log_path)
        go(process, {})
        burst = finish(context, process, out_path, log_path, timeout=300)
        checks["backlog_phase"] = {k: burst[k] for k in ("published", "errors", "error_samples", "seconds")}
        if burst["errors"] or burst["published"] != events:
            raise BenchError(f"backlog: {burst['published']} of {events} published, e.g. {burst['error_samples'][:2]}")
        start = max(time.time(), burst["finished_at"]) + context.warmup
        window = LoadWindow(start=start, end=start + context.duration)
        profiler = profiling.start(context, run, name, servers[0].process.pid, window)
        *cpus, receiver_cpu = timed_cpu(window, [*(s.process.pid for s in servers), receiver.process.pid])
        profiling.finish(context, profiler)
        exited = [server.process for server in servers if server.process.poll() is not None]
        if exited:
            raise BenchError(f"eventbus serve exited with {exited[0].returncode} while delivering")
        report = receiver.report(directory / "received.json")
    except BenchError as exc:
        raise run_failed(name, run, exc, servers) from None
    finally:
        exit_code = stop_all(context, servers, receiver, checks)
        checks.update(store.drop())
    arrivals = report["arrivals"]
    total = events * load.endpoints
    last = max(a for a, _ in arrivals)
    if report["received"] >= total and last < window.end:  # drained before the window ended: count up to then
        checks["backlog_ran_out_at_s"] = round(last - window.start, 2)
        if last - window.start < 0.5:
            raise BenchError(f"{name} run {run}: the {total}-delivery backlog was delivered before the window")
        window = LoadWindow(start=window.start, end=last)
    figures = throughput_figures(arrivals, window, sorted(a - p for a, p in arrivals), sum(cpus), receiver_cpu)
    checks["deliveries_total"] = report["received"]
    problems = delivery_problems(checks, report, servers, exit_code)
    if problems:
        raise BenchError(f"{name} run {run}: " + "; ".join(problems))
    return figures, checks


def measure_baseline(name: str, load: DeliverLoad, context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "baseline")
    secret = generate_secret()
    receiver = Receiver(context, directory, secret)
    try:
        out_path, log_path = directory / "send-loop.json", directory / "send-loop.log"
        urls = ",".join(endpoint_urls(receiver, load.endpoints))
        command = sender(
            urls, secret, "loop", "--mode", "loop", "--out", str(out_path),
            concurrency=load.concurrency * load.endpoints,
        )  # fmt: skip
        process = start_client(context, command, role="server", log_path=log_path)
        now = time.time()
        window = LoadWindow(start=now + context.warmup, end=now + context.warmup + context.duration)
        go(process, {"start_at": now, "warmup_until": window.start, "end_at": window.end})
        sender_cpu, receiver_cpu = timed_cpu(window, [process.pid, receiver.process.pid])
        loop = finish(context, process, out_path, log_path, timeout=60)
        checks: dict[str, Any] = {"loop_phase": {k: loop[k] for k in ("sent", "errors", "error_samples")}}
        if loop["errors"]:
            raise BenchError(f"the baseline failed {loop['errors']} POSTs, e.g. {loop['error_samples'][:2]}")
        checks["loop_phase"]["received"] = receiver.wait_for(loop["sent"], timeout=10)
        report = receiver.report(directory / "received.json")
    finally:
        receiver.stop()
    figures = throughput_figures(
        report["arrivals"], window, sorted(a - p for a, p in report["arrivals"]), sender_cpu, receiver_cpu
    )
    checks.update(receiver_checks(report))
    problems = receiver_problems(checks)
    if report["received"] != loop["sent"]:
        problems.append(f"{loop['sent']} POSTs answered 200, {report['received']} received")
    if problems:
        raise BenchError(f"{name} run {run}, baseline: " + "; ".join(problems))
    return figures, checks
