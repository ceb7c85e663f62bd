"""Webhook delivery: `delivery`, events published over gRPC and delivered, signed, to a bare aiohttp receiver.

Each run, for eventbus: a receiver process (`benchmarks.receiver`) starts; a fresh SQLite store (or, with
`BENCH_STORE=postgresql`, a fresh PostgreSQL schema: `benchmarks.stores`) gets one webhook endpoint (patterns
`**`, the kind's default concurrency) pointing at it; `eventbus serve` starts on that store (`BENCH_PROCESSES`
of them on PostgreSQL, the publish calls taking turns over them). Then two phases, each with its own publisher
process (`python -m benchmarks.delivery publish`):

1. latency: batches of `latency_batch` events at a steady `latency_rate` events/s, well below what the
   dispatcher sustains; every event carries the wall-clock time it was published in its data, and the
   receiver records when it arrived, so publish→receive latency is measured per event, then every event of
   the phase must have arrived;
2. throughput: a backlog of `backlog_events` published as fast as the server takes them (batches of 100),
   then deliveries are counted at the receiver over a timed window that starts a warm-up after the last
   publish: the rate at which the dispatcher drains a backlog.

The baseline (`python -m benchmarks.delivery send`, pinned where the server was) is a bare aiohttp
`ClientSession` loop with the same concurrency, POSTing bodies of the same shape (the `standard` payload
format, the same 1 KiB data, signed the same way) to its own fresh receiver: the same steady rate for the
latency phase, then back to back for the timed window.

In the first run only, `eventbus serve` also starts on a store whose endpoint points at a port where nothing
listens (allowlisted); `dead_events` are published in batches of 1000, the dispatcher tries (and opens the
endpoint's circuit) for `dead_wait_s`, and the server's VmRSS / VmHWM from /proc are compared with the bound.
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
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks import scenario, stores
from benchmarks.harness import (
    READY_TIMEOUT,
    BenchContext,
    BenchError,
    Figures,
    LoadWindow,
    RunFigures,
    cpu_seconds,
    percentile,
    read_json_log,
    read_line,
    tail,
)
from benchmarks.publish import servers_log_issues
from eventbus.bus.webhooks import WebhookKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from eventbus.store.base import Store

T = TypeVar("T")

EVENT_TYPE = "bench.order.paid"
MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class DeliveryLoad:
    data_bytes: int = 1024  # JSON data per event
    concurrency: int = WebhookKind.default_max_concurrency  # the endpoint's (default) and the baseline's
    latency_rate: float = 200.0  # events/s offered in the latency phase, both targets
    latency_batch: int = 10  # events per Publish call (baseline: POSTs started together)
    latency_warmup_s: float = 0.5  # latency samples of events published before this are not counted
    latency_duration_s: float = 3.0  # × BENCH_SCALE
    backlog_events: int = 15_000  # × BENCH_SCALE, published before the throughput window
    backlog_batch: int = 100
    backlog_in_flight: int = 4  # Publish calls at once
    dead_events: int = 100_000  # × BENCH_SCALE, pending for a dead receiver
    dead_batch: int = 1000
    dead_wait_s: float = 5.0  # the dispatcher tries this long before RSS is read
    rss_bound_mb: float = 150.0  # MB = 10^6 bytes


LOAD = DeliveryLoad()


def _notes(report: dict[str, Any]) -> list[str]:
    extra = report.get("extra") or {}
    config = report.get("config") or {}
    lines = [
        f"delivery: deliveries/s = deliveries counted at the receiver in the window while draining a backlog; "
        f"p50/p99 = publish→receive latency at {config.get('latency_rate', LOAD.latency_rate):g} events/s "
        f"(baseline: request built→received)"
    ]
    if "rss_mb" in extra:
        bound = float(config.get("rss_bound_mb", LOAD.rss_bound_mb))
        verdict = "within" if extra["rss_peak_mb"] <= bound else "OVER"
        lines.append(
            f"delivery: eventbus serve RSS with {extra['pending']:,.0f} deliveries pending for a dead receiver: "
            f"{extra['rss_mb']:.1f} MB (peak {extra['rss_peak_mb']:.1f} MB, idle {extra['rss_idle_mb']:.1f} MB) — "
            f"{verdict} the {bound:g} MB bound ({extra['attempts']:,.0f} attempts in {extra['tried_s']:.1f} s)"
        )
    else:
        lines.append("delivery: the dead-receiver RSS measurement did not run")
    return lines


@scenario(
    "delivery",
    summary="events published over gRPC (1 KiB JSON data) delivered as signed webhooks to a bare aiohttp "
    f"receiver, {LOAD.concurrency} at once; deliveries/s draining a backlog, publish→receive latency at "
    f"{LOAD.latency_rate:g} events/s, RSS with {LOAD.dead_events:,} deliveries pending for a dead receiver",
    baseline=f"bare aiohttp ClientSession loop, {LOAD.concurrency} POSTs at once, same signed bodies, same receiver",
    config=asdict(LOAD),
    notes=_notes,
    stores=True,
)
def delivery(context: BenchContext, run: int) -> RunFigures:
    server, checks = measure_eventbus(context, run)
    baseline, baseline_checks = measure_baseline(context, run)
    checks["baseline"] = baseline_checks
    extra: dict[str, Any] = {}
    if run == 1:
        dead = measure_dead_receiver(context)
        checks["dead_receiver"] = dead
        extra = {k: dead[k] for k in ("rss_mb", "rss_peak_mb", "rss_idle_mb", "pending", "attempts", "tried_s")}
    return RunFigures(server=server, baseline=baseline, checks=checks, extra=extra)


# -- the harness side ---------------------------------------------------------------------------------------


def scaled(count: int, scale: float, minimum: int) -> int:
    return max(minimum, round(count * scale))


class Receiver:
    """A `benchmarks.receiver` process, driven over its stdin/stdout."""

    def __init__(self, context: BenchContext, directory: Path, secret: str) -> None:
        self.log_path = directory / "receiver.log"
        self.context = context
        self.process = context.processes.start(
            [sys.executable, "-m", "benchmarks.receiver", "--listen", "127.0.0.1:0", "--secret", secret],
            role="client",
            log_path=self.log_path,
            pipes=True,
        )
        ready = self._line(READY_TIMEOUT)
        if ready.get("event") != "receiver_ready":
            raise BenchError(f"the receiver said {ready!r}:\n{tail(self.log_path)}")
        self.url = f"http://127.0.0.1:{int(ready['port'])}/hook"

    def _line(self, timeout: float) -> dict[str, Any]:
        try:
            answer = json.loads(read_line(self.process, time.monotonic() + timeout))
        except BenchError as exc:
            raise BenchError(f"receiver: {exc}:\n{tail(self.log_path)}") from None
        if not isinstance(answer, dict):
            raise BenchError(f"the receiver answered {answer!r}")
        return answer

    def ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command.encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the receiver is gone ({exc}):\n{tail(self.log_path)}") from None
        return self._line(timeout)

    def count(self) -> int:
        return int(self.ask("count")["received"])

    def wait_for(self, expected: int, timeout: float) -> int:
        """Poll until `expected` requests arrived or `timeout` passed; the count then."""
        deadline = time.monotonic() + timeout
        received = self.count()
        while received < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            received = self.count()
        return received

    def report(self, path: Path) -> dict[str, Any]:
        self.ask(f"report {path}", timeout=60)
        report: dict[str, Any] = json.loads(path.read_text())
        return report

    def stop(self) -> None:
        self.context.processes.stop(self.process, timeout=5)


def start_client(context: BenchContext, command: list[str], *, role: str, log_path: Path) -> subprocess.Popen[bytes]:
    """A publisher or sender process, once it said `ready`."""
    process = context.processes.start(command, role=role, log_path=log_path, pipes=True)
    try:
        line = read_line(process, time.monotonic() + READY_TIMEOUT)
    except BenchError as exc:
        raise BenchError(f"{exc}:\n{tail(log_path)}") from None
    if line != "ready":
        raise BenchError(f"a client process said {line!r} instead of 'ready':\n{tail(log_path)}")
    context.pinning.apply(process.pid, role)
    return process


def go(process: subprocess.Popen[bytes], times: dict[str, float]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(times).encode() + b"\n")
    process.stdin.close()


def finish(
    context: BenchContext, process: subprocess.Popen[bytes], out_path: Path, log_path: Path, timeout: float
) -> dict[str, Any]:
    """Wait for a client process to exit and return its report."""
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"a client process did not finish within {timeout:.0f} s:\n{tail(log_path)}") from None
    finally:
        context.processes.stop(process, timeout=1)
    if code != 0 or not out_path.exists():
        raise BenchError(f"a client process exited with {code}:\n{tail(log_path)}")
    report: dict[str, Any] = json.loads(out_path.read_text())
    return report


def run_client(
    context: BenchContext,
    command: list[str],
    *,
    role: str,
    directory: Path,
    name: str,
    times: dict[str, float],
    timeout: float,
) -> dict[str, Any]:
    out_path, log_path = directory / f"{name}.json", directory / f"{name}.log"
    process = start_client(context, [*command, "--out", str(out_path)], role=role, log_path=log_path)
    now = time.time()
    go(process, {k: now + v for k, v in times.items()})
    return finish(context, process, out_path, log_path, timeout)


def in_store(database: Path | str, operation: Callable[[Store], Awaitable[T]]) -> T:
    """Run `operation` on the store at `database` (a SQLite file, or a store URL), opened here (no server may have
    a SQLite file open), logging warnings only."""
    from eventbus.logs import configure_logging
    from eventbus.store import open_store

    configure_logging("console", "warning")  # the harness prints its table on stdout; the store logs to stderr

    async def run() -> T:
        store = open_store(database if isinstance(database, str) else f"sqlite:///{database}")
        await store.open()
        try:
            return await operation(store)
        finally:
            await store.close()

    return asyncio.run(run())


def create_endpoint(database: Path | str, url: str, secret: str) -> str:
    """A webhook endpoint for every event type, created in the store before the server opens it (the gRPC
    Admin RPCs that would create it over the wire are not in `EventBusClient` yet)."""
    from eventbus.store.base import StartPosition, SubscriptionSpec

    async def create(store: Store) -> str:
        subscription, _ = await store.create_subscription(
            SubscriptionSpec(
                kind="webhook",
                name=None,
                patterns=("**",),
                options={"url": url, "headers": {}, "format": "standard", "timeout": 15.0},
                secrets={"keys": [{"secret": secret, "expires_at": None}]},
            ),
            start=StartPosition(),
            now=datetime.now(UTC),
        )
        return subscription.id

    return in_store(database, create)


def subscription_stats(database: Path | str, subscription_id: str) -> dict[str, int]:
    async def stats(store: Store) -> dict[str, int]:
        found = await store.subscription_stats(subscription_id)
        return {"pending": found.pending, "leased": found.leased, "succeeded": found.succeeded, "dead": found.dead}

    return in_store(database, stats)


def start_servers(context: BenchContext, directory: Path, store: stores.Store) -> list[stores.Server]:
    """The `eventbus serve` process(es) of the store (BENCH_PROCESSES on PostgreSQL), allowed to reach 127.0.0.1."""
    return stores.start_servers(context, directory, store, "--allow-destination", "127.0.0.1/32")


def publisher(target: str, source: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.delivery", "publish",
        "--target", target, "--source", source, "--data-bytes", str(LOAD.data_bytes), *args,
    ]  # fmt: skip


def sender(url: str, secret: str, prefix: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.delivery", "send",
        "--url", url, "--secret", secret, "--id-prefix", prefix,
        "--concurrency", str(LOAD.concurrency), "--data-bytes", str(LOAD.data_bytes), *args,
    ]  # fmt: skip


def paced_args() -> list[str]:
    return ["--mode", "paced", "--rate", str(LOAD.latency_rate), "--batch", str(LOAD.latency_batch)]


def latency_times(context: BenchContext) -> tuple[dict[str, float], float]:
    """Offsets from now of the latency phase, and its timed length."""
    duration = max(1.0, LOAD.latency_duration_s * context.scale)
    start, warm = 0.05, 0.05 + LOAD.latency_warmup_s
    return {"start_at": start, "warmup_until": warm, "end_at": warm + duration}, duration


def latencies_of(arrivals: list[list[float]], since: float, until: float) -> list[float]:
    """Publish→receive seconds of the events published in [since, until), ascending."""
    return sorted(a - p for a, p in arrivals if since <= p < until)


def throughput_figures(
    arrivals: list[list[float]],
    window: LoadWindow,
    latencies: list[float],
    server_cpu: float,
    receiver_cpu: float,
) -> Figures:
    seconds = window.seconds
    counted = [a for a, _ in arrivals if window.start <= a < window.end]
    if not counted:
        raise BenchError(f"no delivery arrived in the {seconds:.1f} s window")
    by_second = [0] * max(1, math.ceil(seconds))
    for arrived in counted:
        by_second[min(len(by_second) - 1, int(arrived - window.start))] += 1
    rate = round(len(counted) / seconds, 1)
    return Figures(
        calls_per_s=rate,
        events_per_s=rate,
        p50_ms=round(percentile(latencies, 50) * 1000, 3),
        p99_ms=round(percentile(latencies, 99) * 1000, 3),
        server_cpu_pct=round(server_cpu / seconds * 100, 1),
        client_cpu_pct=round(receiver_cpu / seconds * 100, 1),
        calls=len(counted),
        events=len(counted),
        errors=0,
        events_by_second=by_second,
    )


def timed_cpu(window: LoadWindow, pids: list[int]) -> list[float]:
    """CPU seconds of each process over `window` (sleeps until its end)."""
    time.sleep(max(0.0, window.start - time.time()))
    before = [cpu_seconds(pid) for pid in pids]
    time.sleep(max(0.0, window.end - time.time()))
    return [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


def receiver_checks(report: dict[str, Any]) -> dict[str, Any]:
    return {
        k: report[k] for k in ("received", "distinct_ids", "duplicates", "unsigned", "bad_signatures", "bad_bodies")
    }


def receiver_problems(checks: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("unsigned", "bad_signatures", "bad_bodies", "duplicates"):
        if checks.get(name):
            problems.append(f"the receiver counted {checks[name]} {name.replace('_', ' ')}")
    return problems


def measure_eventbus(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    secret = generate_secret()
    receiver = Receiver(context, directory, secret)
    store = stores.Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[stores.Server] = []
    source = f"/bench/delivery/run{run}"
    try:
        create_endpoint(store.url, receiver.url, secret)
        servers = start_servers(context, directory, store)
        target = ",".join(server.grpc for server in servers)  # publish calls take turns over the processes
        server_pids = [server.process.pid for server in servers]
        # 1. latency, at a steady rate
        times, latency_seconds = latency_times(context)
        paced = run_client(
            context, publisher(target, f"{source}/latency", *paced_args()),
            role="client", directory=directory, name="publish-latency", times=times, timeout=times["end_at"] + 60,
        )  # fmt: skip
        checks["latency_phase"] = {k: paced[k] for k in ("published", "errors", "error_samples")}
        arrived = receiver.wait_for(paced["published"], timeout=30)
        checks["latency_phase"]["received"] = arrived
        if paced["errors"] or arrived < paced["published"]:
            raise BenchError(
                f"latency phase: {paced['published']} events published ({paced['errors']} calls failed, e.g. "
                f"{paced['error_samples'][:2]}), {arrived} delivered within 30 s"
            )
        # 2. throughput, draining a backlog
        backlog = scaled(LOAD.backlog_events, context.scale, 2 * LOAD.backlog_batch)
        burst = run_client(
            context,
            publisher(target, f"{source}/backlog", "--mode", "burst", "--count", str(backlog),
                      "--batch", str(LOAD.backlog_batch), "--in-flight", str(LOAD.backlog_in_flight)),
            role="client", directory=directory, name="publish-backlog", times={}, timeout=120,
        )  # fmt: skip
        checks["backlog_phase"] = {k: burst[k] for k in ("published", "errors", "error_samples", "seconds")}
        if burst["errors"] or burst["published"] != backlog:
            raise BenchError(f"backlog: {burst['published']} of {backlog} published, e.g. {burst['error_samples'][:2]}")
        start = max(time.time(), burst["finished_at"]) + context.warmup
        window = LoadWindow(start=start, end=start + context.duration)
        *cpus, receiver_cpu = timed_cpu(window, [*server_pids, receiver.process.pid])
        server_cpu = sum(cpus)
        exited = [server.process for server in servers if server.process.poll() is not None]
        if exited:
            raise BenchError(f"eventbus serve exited with {exited[0].returncode} while delivering")
        report = receiver.report(directory / "received.json")
    except BenchError as exc:
        issues = servers_log_issues(servers)
        last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
        raise BenchError(
            f"delivery run {run}: {exc}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}"
            + "\n" + "\n".join(issues["server_log_samples"]) + last
        ) from None  # fmt: skip
    finally:
        codes = stores.stop_servers(context, servers)
        receiver.stop()
        exit_code = next((code for code in codes if code != 0), 0)
        checks["server_exit_code"] = exit_code
        if len(codes) > 1:
            checks["server_exit_codes"] = codes
        checks.update(servers_log_issues(servers))
        checks.update(store.drop())
    arrivals = report["arrivals"]
    total = paced["published"] + backlog
    last = max(a for a, _ in arrivals)
    if report["received"] >= total and last < window.end:  # drained before the window ended: count up to then
        checks["backlog_ran_out_at_s"] = round(last - window.start, 2)
        if last - window.start < 0.5:
            raise BenchError(f"delivery run {run}: the {backlog}-event backlog was delivered before the window")
        window = LoadWindow(start=window.start, end=last)
    since = times["warmup_until"] + (paced["started_at"] - times["start_at"])
    latencies = latencies_of(arrivals, since, since + latency_seconds)
    figures = throughput_figures(arrivals, window, latencies, server_cpu, receiver_cpu)
    checks["latency_samples"] = len(latencies)
    checks["deliveries_total"] = report["received"]
    checks.update(receiver_checks(report))
    attempts = [r for s in servers for r in read_json_log(s.log_path) if r.get("event") == "delivery_attempted"]
    checks["attempts_logged"] = len(attempts)
    checks["attempts_not_succeeded"] = sum(1 for r in attempts if r.get("outcome") != "succeeded")
    problems = receiver_problems(checks)
    if checks["attempts_not_succeeded"]:
        problems.append(f"{checks['attempts_not_succeeded']} delivery attempts did not succeed")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError(f"delivery run {run}: " + "; ".join(problems))
    return figures, checks


def measure_baseline(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "baseline")
    secret = generate_secret()
    receiver = Receiver(context, directory, secret)
    checks: dict[str, Any] = {}
    try:
        times, latency_seconds = latency_times(context)
        paced = run_client(
            context, sender(receiver.url, secret, "lat", *paced_args()),
            role="server", directory=directory, name="send-latency", times=times, timeout=times["end_at"] + 60,
        )  # fmt: skip
        arrived = receiver.wait_for(paced["sent"], timeout=30)
        checks["latency_phase"] = {k: paced[k] for k in ("sent", "errors", "error_samples")}
        checks["latency_phase"]["received"] = arrived
        if paced["errors"] or arrived < paced["sent"]:
            raise BenchError(
                f"baseline latency phase: {paced['sent']} sent, {arrived} received, {paced['errors']} failed"
            )
        out_path, log_path = directory / "send-loop.json", directory / "send-loop.log"
        command = sender(receiver.url, secret, "loop", "--mode", "loop", "--out", str(out_path))
        process = start_client(context, command, role="server", log_path=log_path)
        now = time.time()
        window = LoadWindow(start=now + context.warmup, end=now + context.warmup + context.duration)
        go(process, {"start_at": now, "warmup_until": window.start, "end_at": window.end})
        sender_cpu, receiver_cpu = timed_cpu(window, [process.pid, receiver.process.pid])
        loop = finish(context, process, out_path, log_path, timeout=60)
        checks["loop_phase"] = {k: loop[k] for k in ("sent", "errors", "error_samples")}
        if loop["errors"]:
            raise BenchError(f"the baseline failed {loop['errors']} POSTs, e.g. {loop['error_samples'][:2]}")
        checks["loop_phase"]["received"] = receiver.wait_for(paced["sent"] + loop["sent"], timeout=10)
        report = receiver.report(directory / "received.json")
    finally:
        receiver.stop()
    since = times["warmup_until"] + (paced["started_at"] - times["start_at"])
    latencies = latencies_of(report["arrivals"], since, since + latency_seconds)
    figures = throughput_figures(report["arrivals"], window, latencies, sender_cpu, receiver_cpu)
    checks["latency_samples"] = len(latencies)
    checks.update(receiver_checks(report))
    problems = receiver_problems(checks)
    if report["received"] != paced["sent"] + loop["sent"]:
        problems.append(f"{paced['sent'] + loop['sent']} POSTs answered 200, {report['received']} received")
    if problems:
        raise BenchError(f"delivery run {run}, baseline: " + "; ".join(problems))
    return figures, checks


def read_status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB (10^6 bytes)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024 / 1e6
    if len(found) != 2:
        raise BenchError(f"no VmRSS/VmHWM in /proc/{pid}/status")
    return found


def max_status_mb(servers: list[stores.Server]) -> dict[str, float]:
    """The largest VmRSS and VmHWM among the servers' processes, in MB."""
    found = [read_status_mb(server.process.pid) for server in servers]
    return {name: max(f[name] for f in found) for name in ("VmRSS", "VmHWM")}


def measure_dead_receiver(context: BenchContext) -> dict[str, Any]:
    """RSS of the server with `dead_events` deliveries pending for an endpoint where nothing listens (with several
    processes: the largest of theirs)."""
    directory = context.run_dir(0, "dead-receiver")
    count = scaled(LOAD.dead_events, context.scale, 2 * LOAD.dead_batch)
    store = stores.Store.fresh(directory)
    servers: list[stores.Server] = []
    # Bound but never listening: a connect is refused, and no other process can take the port meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as dead:
        dead.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
        from eventbus.signing import generate_secret

        try:
            subscription_id = create_endpoint(store.url, url, generate_secret())
            servers = start_servers(context, directory, store)
            target = ",".join(server.grpc for server in servers)
            idle = max_status_mb(servers)
            burst = run_client(
                context,
                publisher(target, "/bench/delivery/dead", "--mode", "burst", "--count", str(count),
                          "--batch", str(LOAD.dead_batch), "--in-flight", "2"),
                role="client", directory=directory, name="publish-dead", times={}, timeout=300,
            )  # fmt: skip
            if burst["errors"] or burst["published"] != count:
                raise BenchError(
                    f"dead receiver: {burst['published']} of {count} published, e.g. {burst['error_samples'][:2]}"
                )
            time.sleep(max(0.0, burst["finished_at"] + LOAD.dead_wait_s - time.time()))
            exited = [server.process for server in servers if server.process.poll() is not None]
            if exited:
                raise BenchError(f"eventbus serve exited with {exited[0].returncode} with deliveries pending")
            status = max_status_mb(servers)
            tried_s = time.time() - burst["started_at"]
        except BenchError as exc:
            last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
            store.drop()
            raise BenchError(f"delivery, dead receiver: {exc}{last}") from None
        finally:
            codes = stores.stop_servers(context, servers)
    exit_code = next((code for code in codes if code != 0), 0)
    stats = subscription_stats(store.url, subscription_id)
    dropped = store.drop()
    attempts = [r for s in servers for r in read_json_log(s.log_path) if r.get("event") == "delivery_attempted"]
    result = {
        "events_published": count,
        "publish_s": burst["seconds"],
        "rss_idle_mb": round(idle["VmRSS"], 1),
        "rss_mb": round(status["VmRSS"], 1),
        "rss_peak_mb": round(status["VmHWM"], 1),
        "rss_bound_mb": LOAD.rss_bound_mb,
        "within_bound": status["VmHWM"] <= LOAD.rss_bound_mb,
        "tried_s": round(tried_s, 1),
        "attempts": len(attempts),
        "attempt_errors": sorted({str(r.get("error_class")) for r in attempts}),
        "pending": stats["pending"] + stats["leased"],
        "stats_after_stop": stats,
        "server_exit_code": exit_code,
        **({"server_exit_codes": codes} if len(codes) > 1 else {}),
        **servers_log_issues(servers),
        **dropped,
    }
    problems = []
    if not attempts:
        problems.append("the dispatcher made no attempt")
    if stats["pending"] + stats["leased"] != count:
        problems.append(f"{count} published but {stats} after the run")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError("delivery, dead receiver: " + "; ".join(problems))
    return result


# -- the client processes: `python -m benchmarks.delivery publish|send ...` -----------------------------------


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
            async with session.post(args.url, data=body, headers=headers) as response:
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delivery", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mode", choices=["paced", "burst", "loop"], required=True)
    common.add_argument("--rate", type=float, default=LOAD.latency_rate, help="paced: events per second")
    common.add_argument("--batch", type=int, default=LOAD.latency_batch, help="events per call / per tick")
    common.add_argument("--data-bytes", type=int, default=LOAD.data_bytes)
    common.add_argument("--out", required=True, help="where to write the JSON report")
    publish = commands.add_parser("publish", parents=[common], help="gRPC Publish, paced or a burst of --count")
    publish.add_argument(
        "--target", required=True, help="HOST:PORT of eventbus serve (127.0.0.1 only); several, comma-separated"
    )
    publish.add_argument("--source", required=True, help="CloudEvents source (unique per phase)")
    publish.add_argument("--count", type=int, default=0, help="burst: events to publish")
    publish.add_argument("--in-flight", type=int, default=1, help="burst: Publish calls at once")
    send = commands.add_parser("send", parents=[common], help="the baseline: signed POSTs, paced or back to back")
    send.add_argument("--url", required=True, help="the receiver (127.0.0.1 only)")
    send.add_argument("--secret", required=True, help="whsec_ secret to sign with")
    send.add_argument("--id-prefix", required=True, help="webhook-id prefix (unique per phase)")
    send.add_argument("--concurrency", type=int, default=LOAD.concurrency, help="POSTs at once")
    args = parser.parse_args(argv)
    where = args.target.split(",") if args.command == "publish" else [args.url.removeprefix("http://")]
    if not all(w.startswith("127.0.0.1:") for w in where):
        parser.error("only 127.0.0.1: this machine is shared")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(publish_main(args) if args.command == "publish" else send_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
