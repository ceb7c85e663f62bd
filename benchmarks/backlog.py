"""A receiver that was down: `backlog`, 1 000 000 deliveries queued for it (× BENCH_SCALE), then it comes back.

One run: the harness binds a port on 127.0.0.1 and does not listen on it (a connect is refused, and no other
process can take the port meanwhile); a fresh store gets one webhook endpoint for that port (allowlisted);
`eventbus serve` starts; a publisher process sends `events` × scale events (1 KiB JSON data) in batches of 1000,
2 calls at once. The dispatcher tries, fails and opens the endpoint's circuit (5 consecutive failures); `settle_s`
after the last publish the server's VmRSS / VmHWM (from /proc) are compared with the bound. Then the receiver
process starts listening on that very socket (inherited), and the harness waits for the first delivery to
arrive: the circuit's next probe succeeds and closes it (the first probe is 30 s after it opened, doubling per
failed probe, at most 5 min). Deliveries are counted at the receiver over the timed window that starts a
warm-up after the first arrival. After the server stops, the store must count every event's delivery as
pending, leased or delivered. No baseline: the targets are absolute.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import at_least, at_most, profiling, scenario, stores
from benchmarks.harness import BenchContext, BenchError, Figures, LoadWindow, RunFigures, tail
from benchmarks.publish import servers_log_issues
from benchmarks.webhooks import (
    Receiver,
    create_endpoint,
    max_status_mb,
    publisher,
    receiver_checks,
    receiver_problems,
    run_client,
    scaled,
    start_servers,
    subscription_stats,
    throughput_figures,
    timed_cpu,
)


@dataclass(frozen=True, slots=True)
class BacklogLoad:
    events: int = 1_000_000  # × BENCH_SCALE, queued for the dead receiver
    batch: int = 1000  # events per Publish call
    in_flight: int = 2
    settle_s: float = 5.0  # after the last publish, before RSS is read: the dispatcher keeps trying meanwhile
    rss_bound_mb: float = 150.0  # MB = 10^6 bytes
    probe_wait_s: float = 330.0  # longest wait for the circuit to close: the 5 min probe cap and a margin


LOAD = BacklogLoad()


def _notes(report: dict[str, Any]) -> list[str]:
    extra = report.get("extra") or {}
    if "rss_mb" not in extra:
        return ["backlog: the queued phase did not finish"]
    verdict = "within" if extra["rss_peak_mb"] <= LOAD.rss_bound_mb else "OVER"
    return [
        f"backlog: {extra['queued']:,.0f} deliveries queued for a dead receiver (published in "
        f"{extra['publish_s']:.1f} s): RSS {extra['rss_mb']:.1f} MB (peak {extra['rss_peak_mb']:.1f} MB, idle "
        f"{extra['rss_idle_mb']:.1f} MB) — {verdict} the {LOAD.rss_bound_mb:g} MB bound; the circuit closed "
        f"{extra['circuit_closed_after_s']:.1f} s after the receiver came back; drain = deliveries/s after that"
    ]


@scenario(
    "backlog",
    max_runs=1,
    summary=f"{LOAD.events:,} deliveries (× BENCH_SCALE) queued for a webhook receiver that is down, RSS while "
    "queued; then it comes back: deliveries/s once the circuit closes",
    baseline=None,
    config=asdict(LOAD),
    notes=_notes,
    stores=True,
    targets=(
        at_most("extra.rss_peak_mb", LOAD.rss_bound_mb, "RSS MB while queued (peak)"),
        at_least("medians.server.calls_per_s", 2000, "drain deliveries/s"),
    ),
)
def backlog(context: BenchContext, run: int) -> RunFigures:
    server, checks, extra = measure(context, run)
    return RunFigures(server=server, baseline=None, checks=checks, extra=extra)


def measure(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any], dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    count = scaled(LOAD.events, context.scale, 20 * LOAD.batch)
    secret = generate_secret()
    store = stores.Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[stores.Server] = []
    receiver: Receiver | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as dead:
        dead.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
        try:
            subscription_id = create_endpoint(store.url, url, secret)
            servers = start_servers(context, directory, store)
            target = ",".join(server.grpc for server in servers)
            idle = max_status_mb(servers)
            burst = run_client(
                context,
                publisher(target, f"/bench/backlog/run{run}", "--mode", "burst", "--count", str(count),
                          "--batch", str(LOAD.batch), "--in-flight", str(LOAD.in_flight)),
                role="client", directory=directory, name="publish", times={}, timeout=1800,
            )  # fmt: skip
            checks["publish"] = {k: burst[k] for k in ("published", "errors", "error_samples", "seconds")}
            if burst["errors"] or burst["published"] != count:
                raise BenchError(f"{burst['published']} of {count} published, e.g. {burst['error_samples'][:2]}")
            time.sleep(max(0.0, burst["finished_at"] + LOAD.settle_s - time.time()))
            status = max_status_mb(servers)
            # The receiver comes back on the very port the endpoint names.
            receiver = Receiver(context, directory, secret, fd=dead.fileno())
            back_at = time.time()
            if receiver.wait_for(1, timeout=LOAD.probe_wait_s) < 1:
                raise BenchError(f"no delivery arrived {LOAD.probe_wait_s:.0f} s after the receiver came back")
            closed_at = time.time()
            start = closed_at + context.warmup
            window = LoadWindow(start=start, end=start + context.duration)
            profiler = profiling.start(context, run, "backlog", servers[0].process.pid, window)
            *cpus, receiver_cpu = timed_cpu(window, [*(s.process.pid for s in servers), receiver.process.pid])
            profiling.finish(context, profiler)
            exited = [server.process for server in servers if server.process.poll() is not None]
            if exited:
                raise BenchError(f"eventbus serve exited with {exited[0].returncode} while draining")
            report = receiver.report(directory / "received.json")
        except BenchError as exc:
            issues = servers_log_issues(servers)
            last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
            store.drop()
            raise BenchError(
                f"backlog run {run}: {exc}\neventbus serve log: {issues['server_log_issues']}{last}"
            ) from None
        finally:
            codes = stores.stop_servers(context, servers)
            if receiver is not None:
                receiver.stop()
    exit_code = next((code for code in codes if code != 0), 0)
    stats = subscription_stats(store.url, subscription_id)
    checks.update(store.drop())
    checks["stats_after_stop"] = stats
    checks["server_exit_code"] = exit_code
    checks.update(servers_log_issues(servers))
    figures = throughput_figures(report["arrivals"], window, sorted(a - p for a, p in report["arrivals"]),
                                 sum(cpus), receiver_cpu)  # fmt: skip
    checks.update(receiver_checks(report))
    extra = {
        "queued": count,
        "publish_s": burst["seconds"],
        "rss_idle_mb": round(idle["VmRSS"], 1),
        "rss_mb": round(status["VmRSS"], 1),
        "rss_peak_mb": round(status["VmHWM"], 1),
        "circuit_closed_after_s": round(closed_at - back_at, 1),
    }
    problems = receiver_problems(checks)
    # Failed attempts while it was down are expected (warnings); errors and tracebacks are not.
    bad = {k: v for k, v in checks["server_log_issues"].items() if not k.startswith("warning:")}
    if bad:
        problems.append(f"server log errors: {bad}")
    accounted = stats["pending"] + stats["leased"] + stats["succeeded"]
    if accounted != count:
        problems.append(f"{count} published but {stats} after the run")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError(f"backlog run {run}: " + "; ".join(problems))
    return figures, checks, extra
