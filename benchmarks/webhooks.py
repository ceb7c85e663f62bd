"""The harness side of the webhook scenarios: the receiver process, the client processes (`benchmarks.clients`),
webhook endpoints created in a store before `eventbus serve` opens it, and the figures of deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks import stores
from benchmarks.harness import (
    READY_TIMEOUT,
    BenchContext,
    BenchError,
    Figures,
    LoadWindow,
    cpu_seconds,
    percentile,
    read_line,
    tail,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from eventbus.store.base import Store

T = TypeVar("T")

DATA_BYTES = 1024  # JSON data per event, every webhook scenario
ENDPOINT_CONCURRENCY = 10  # WebhookKind.default_max_concurrency: each endpoint's, and the baseline's per endpoint


def scaled(count: int, scale: float, minimum: int) -> int:
    return max(minimum, round(count * scale))


class Receiver:
    """A `benchmarks.receiver` process, driven over its stdin/stdout."""

    def __init__(self, context: BenchContext, directory: Path, secret: str, *, fd: int | None = None) -> None:
        """`fd`: a bound socket of this process to listen on (its port was the endpoint's while it was down)."""
        self.log_path = directory / "receiver.log"
        self.context = context
        where = ["--fd", str(fd)] if fd is not None else ["--listen", "127.0.0.1:0"]
        self.process = context.processes.start(
            [sys.executable, "-m", "benchmarks.receiver", *where, "--secret", secret],
            role="client",
            log_path=self.log_path,
            pipes=True,
            pass_fds=() if fd is None else (fd,),
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
    return create_endpoints(database, [url], secret)[0]


def create_endpoints(database: Path | str, urls: list[str], secret: str) -> list[str]:
    """One endpoint per URL (patterns `**`, `standard` format, the kind's default concurrency), all signing with
    `secret` so that one receiver checks them all."""
    from eventbus.store.base import StartPosition, SubscriptionSpec

    async def create(store: Store) -> list[str]:
        ids = []
        for url in urls:
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
            ids.append(subscription.id)
        return ids

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
        sys.executable, "-m", "benchmarks.clients", "publish",
        "--target", target, "--source", source, "--data-bytes", str(DATA_BYTES), *args,
    ]  # fmt: skip


def sender(url: str, secret: str, prefix: str, *args: str, concurrency: int = ENDPOINT_CONCURRENCY) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.clients", "send",
        "--url", url, "--secret", secret, "--id-prefix", prefix,
        "--concurrency", str(concurrency), "--data-bytes", str(DATA_BYTES), *args,
    ]  # fmt: skip


def paced_args(rate: float, batch: int) -> list[str]:
    return ["--mode", "paced", "--rate", str(rate), "--batch", str(batch)]


def latency_times(warmup: float, duration: float) -> tuple[dict[str, float], float]:
    """Offsets from now of a paced phase (`warmup` seconds, then `duration` timed), and its timed length."""
    start, warm = 0.05, 0.05 + warmup
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
