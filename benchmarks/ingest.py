"""Inbound webhooks: `ingest`, uniquely signed Standard Webhooks POSTs to `/hooks/{source}`.

Each run, for eventbus: a fresh SQLite store gets one source (connector `standardwebhooks`, one `whsec_`
secret), created in-process before `eventbus serve` opens the store; the server starts; load processes
(`python -m benchmarks.ingest load`, pinned off the server's core) each build a corpus of uniquely signed
requests just before the run (a unique `webhook-id` per request, `webhook-timestamp` = the time it was
signed, a 1 KiB JSON body `{"type": "order.paid", "data": {...}}`, `v1` signature by `eventbus.signing.sign_v1`)
and POST it with aiohttp over `connections` keep-alive connections in all. Every answer must be a 202 (the
server answers it only after the durable commit); after the server stops, the store must hold exactly one
event and one raw request per 202.

The baseline (`benchmarks.baseline_http`, on the same core and the same kind of event loop) reads the body
and answers an empty 202; the same load processes and corpus shape are pointed at it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import at_least, at_most, scenario
from benchmarks.corpus import CloudEventsCorpus, Corpus
from benchmarks.harness import (
    BenchContext,
    BenchError,
    Figures,
    RunFigures,
    figures_from_reports,
    read_json_log,
    run_load,
    tail,
    wait_for_log_event,
)
from benchmarks.publish import eventbus_command, log_issues

if TYPE_CHECKING:
    from eventbus.store.base import Store

CONNECTOR = "standardwebhooks"
EVENT_TYPE = "order.paid"  # stored as standardwebhooks.order.paid
CALL_TIMEOUT = 30.0
MAX_ERROR_SAMPLES = 5
LIST_PAGE = 1000


@dataclass(frozen=True, slots=True)
class IngestLoad:
    processes: int = 2  # load processes
    connections: int = 32  # keep-alive connections, all processes together, each with one request in flight
    body_bytes: int = 1024  # the JSON body of each request
    corpus_rate: int = 12_000  # requests/s the pre-signed corpus is sized for (beyond it: signed on the fly)


LOAD = IngestLoad()


def _notes(report: dict[str, Any]) -> list[str]:
    medians = report.get("medians") or {}
    extra = report.get("extra") or {}
    server, baseline = medians.get("server", {}), medians.get("baseline", {})
    line = (
        f"ingest: eventbus {server.get('calls_per_s', 0):,.0f} req/s (p50 {server.get('p50_ms', 0):.2f} ms, "
        f"p99 {server.get('p99_ms', 0):.2f} ms) vs bare aiohttp {baseline.get('calls_per_s', 0):,.0f} req/s "
        f"(p50 {baseline.get('p50_ms', 0):.2f} ms, p99 {baseline.get('p99_ms', 0):.2f} ms): "
        f"ratio {report.get('ratio') or 0:.2f}"
    )
    lines = [line]
    if extra.get("signed_late_server") or extra.get("signed_late_baseline"):
        lines.append(
            f"ingest: the pre-signed corpus ran out; {extra.get('signed_late_server', 0):,.0f} (eventbus) / "
            f"{extra.get('signed_late_baseline', 0):,.0f} (baseline) requests were signed during the run"
        )
    return lines


@scenario(
    "ingest",
    summary=f"uniquely signed Standard Webhooks POST /hooks/{{source}}, {LOAD.body_bytes} B JSON bodies, "
    f"{LOAD.connections} connections from {LOAD.processes} aiohttp client processes; the server verifies, "
    "stores the event and the raw request in one durable transaction, then answers 202",
    baseline="bare aiohttp handler in its own process that reads the body and answers 202, same event loop",
    config=asdict(LOAD),
    notes=_notes,
    targets=(at_least("ratio", 0.40, "req/s ratio"), at_most("medians.server.p99_ms", 20.0, "p99 ms")),
)
def ingest(context: BenchContext, run: int) -> RunFigures:
    server, checks, loop = measure_eventbus(context, run)
    baseline, baseline_checks = measure_baseline(context, run, loop)
    checks["baseline"] = baseline_checks
    extra = {"signed_late_server": checks["signed_late"], "signed_late_baseline": baseline_checks["signed_late"]}
    return RunFigures(server=server, baseline=baseline, checks=checks, extra=extra)


# -- the harness side ---------------------------------------------------------------------------------------


def corpus_size(context: BenchContext) -> int:
    """Requests each load process signs before the run: enough for `corpus_rate` over warm-up, window and tail."""
    seconds = context.warmup + context.duration + 1.0
    return math.ceil(LOAD.corpus_rate * seconds / LOAD.processes)


def load_commands(
    context: BenchContext, url: str, secret: str, prefix: str, directory: Path, fmt: str = CONNECTOR
) -> list[list[str]]:
    """`fmt`: `standardwebhooks` (POST /hooks/{source}) or `cloudevents` (binary mode, POST /events)."""
    per_process, extra = divmod(LOAD.connections, LOAD.processes)
    commands = []
    for index in range(LOAD.processes):
        command = [
            sys.executable, "-m", "benchmarks.ingest", "load",
            "--url", url, "--secret", secret, "--id-prefix", f"{prefix}p{index}-",
            "--connections", str(per_process + (1 if index < extra else 0)),
            "--body-bytes", str(LOAD.body_bytes), "--corpus", str(corpus_size(context)), "--format", fmt,
            "--out", str(directory / f"load-{index}.json"),
        ]  # fmt: skip
        commands.append(command)
    return commands


def create_source(database: Path, name: str, secret: str) -> str:
    """The source, created in the store before the server opens it (`eventbus sources` is not a command yet)."""
    from benchmarks.webhooks import in_store
    from eventbus.store.sources import SourceSecret, SourceSpec, source_store_of

    async def create(store: Store) -> str:
        spec = SourceSpec(name=name, connector=CONNECTOR, secrets=(SourceSecret(secret),))
        source = await source_store_of(store).create_source(spec, now=datetime.now(UTC))
        return source.id

    return in_store(database, create)


def stored_events(database: Path, event_source: str, expected: int) -> dict[str, int]:
    """After the server stopped: the events of the source (paged through the store), and its raw requests."""
    from benchmarks.webhooks import in_store
    from eventbus.store.base import EventQuery

    async def count(store: Store) -> dict[str, int]:
        listed, wrong_type, after = 0, 0, 0
        ids: set[str] = set()
        for _ in range(expected // LIST_PAGE + 100):
            page = await store.list_events(EventQuery(after_seq=after, limit=LIST_PAGE, source=event_source))
            if not page:
                return {"events_stored": listed, "distinct_ids_stored": len(ids), "wrong_type": wrong_type}
            for stored in page:
                listed += 1
                ids.add(stored.event.id)
                wrong_type += stored.event.type != f"{CONNECTOR}.{EVENT_TYPE}"
            after = page[-1].seq
        raise BenchError(f"the store still had events after {expected // LIST_PAGE + 100} pages")

    counts = in_store(database, count)
    # The raw requests have no listing operation in the store contract: counted in the file itself.
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        counts["raw_requests_stored"] = int(conn.execute("SELECT COUNT(*) FROM raw_requests").fetchone()[0])
    return counts


def load_checks(reports: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    for report in reports:
        statuses.update(report["statuses"])
    return {
        "requests_sent": sum(int(r["sent"]) for r in reports),
        "answered_202": sum(int(r["accepted"]) for r in reports),
        "statuses": dict(statuses),
        "client_errors": sum(int(r["errors"]) for r in reports),
        "client_error_samples": [s for r in reports for s in r["error_samples"]][:MAX_ERROR_SAMPLES],
        "corpus_per_process": int(reports[0]["corpus"]),
        "corpus_build_s": max(float(r["corpus_build_s"]) for r in reports),
        "signed_late": sum(int(r["signed_late"]) for r in reports),
    }


PROFILE_MARGIN_S = 5.0  # py-spy starts before the load processes do: their start-up, then the window


def start_profiler(context: BenchContext, pid: int, directory: Path) -> subprocess.Popen[bytes]:
    """`BENCH_PROFILE=DIR`: py-spy samples the server (idle threads left out) from before the load processes start
    until a little after the window of the first run ends; collapsed stacks in DIR/ingest-eventbus.txt.
    `BENCH_PROFILE_ARGS` appends py-spy flags (`--gil`: only the thread holding the GIL)."""
    out = Path(os.environ["BENCH_PROFILE"]).resolve()
    seconds = math.ceil(PROFILE_MARGIN_S + context.warmup + context.duration)
    out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [
        str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--nonblocking",
        "--duration", str(seconds), "--output", str(out / "ingest-eventbus.txt"),
        *shlex.split(os.environ.get("BENCH_PROFILE_ARGS", "")),
    ]  # fmt: skip
    return context.processes.start(command, role="client", log_path=directory / "py-spy.log")


def measure_eventbus(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any], str]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    database = directory / "eventbus.db"
    name = f"bench-ingest-run{run}"
    secret = generate_secret()
    create_source(database, name, secret)
    log_path = directory / "server.log"
    process = context.processes.start(eventbus_command(database), role="server", log_path=log_path, cwd=directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "source": name}
    profiler: subprocess.Popen[bytes] | None = None
    try:
        ready = wait_for_log_event(process, log_path, "server_ready")
        context.pinning.apply(process.pid, "server")
        starting = next((r for r in read_json_log(log_path) if r.get("event") == "server_starting"), {})
        loop = str(starting.get("loop", "asyncio"))
        checks["server_loop"] = loop
        url = f"http://{ready['http']}/hooks/{name}"
        commands = load_commands(context, url, secret, f"r{run}", directory)
        if run == 1 and os.environ.get("BENCH_PROFILE"):
            profiler = start_profiler(context, process.pid, directory)
        reports, window, server_cpu = run_load(
            context.processes,
            commands,
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=process.pid,
        )
        if process.poll() is not None:
            raise BenchError(f"eventbus serve exited with {process.returncode} during the load")
        figures = figures_from_reports(reports, window, server_cpu, by_second_key="by_second")
        checks.update(load_checks(reports))
        if profiler is not None:  # it ends by itself, a little after the window, and writes its file then
            try:
                checks["profile_exit_code"] = profiler.wait(PROFILE_MARGIN_S + 30)
            except subprocess.TimeoutExpired:
                checks["profile_exit_code"] = None
    except BenchError as exc:
        issues = log_issues(log_path)
        raise BenchError(
            f"ingest run {run}: {exc}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}"
            + "\n" + "\n".join(issues["server_log_samples"]) + f"\nlast lines:\n{tail(log_path, 5)}"
        ) from None  # fmt: skip
    finally:
        exit_code = context.processes.stop(process)
        checks["server_exit_code"] = exit_code
        checks.update(log_issues(log_path))
        if profiler is not None and profiler.poll() is None:
            context.processes.stop(profiler, timeout=10)
    checks.update(stored_events(database, f"/hooks/{name}", checks["answered_202"]))
    problems = []
    if checks["client_errors"]:
        problems.append(f"{checks['client_errors']} requests failed, e.g. {checks['client_error_samples']}")
    if checks["answered_202"] != checks["requests_sent"]:
        problems.append(
            f"{checks['requests_sent']} requests, {checks['answered_202']} answered 202: {checks['statuses']}"
        )
    stored = (checks["events_stored"], checks["distinct_ids_stored"], checks["raw_requests_stored"])
    if any(count != checks["answered_202"] for count in stored):
        problems.append(
            f"{checks['answered_202']} answered 202, but the store holds {stored[0]} events ({stored[1]} distinct "
            f"ids) and {stored[2]} raw requests"
        )
    if checks["wrong_type"]:
        problems.append(f"{checks['wrong_type']} stored events are not of type {CONNECTOR}.{EVENT_TYPE}")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        samples = "\n".join(checks["server_log_samples"])
        raise BenchError(f"ingest run {run}: " + "; ".join(problems) + (f"\n{samples}" if samples else ""))
    return figures, checks, loop


def measure_baseline(context: BenchContext, run: int, loop: str) -> tuple[Figures, dict[str, Any]]:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "baseline")
    log_path = directory / "server.log"
    command = [sys.executable, "-m", "benchmarks.baseline_http", "--listen", "127.0.0.1:0", "--loop", loop]
    process = context.processes.start(command, role="server", log_path=log_path, cwd=directory)
    try:
        ready = wait_for_log_event(process, log_path, "server_ready")
        context.pinning.apply(process.pid, "server")
        url = f"http://{ready['http']}/hooks/bench-ingest-run{run}"
        reports, window, server_cpu = run_load(
            context.processes,
            load_commands(context, url, generate_secret(), f"b{run}", directory),
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=process.pid,
        )
    finally:
        exit_code = context.processes.stop(process)
    figures = figures_from_reports(reports, window, server_cpu, by_second_key="by_second")
    checks = {**load_checks(reports), "server_loop": ready.get("loop"), "server_exit_code": exit_code}
    if checks["client_errors"] or checks["answered_202"] != checks["requests_sent"]:
        raise BenchError(
            f"ingest run {run}, baseline: {checks['requests_sent']} requests, {checks['answered_202']} answered 202 "
            f"({checks['statuses']}), e.g. {checks['client_error_samples'][:3]}"
        )
    return figures, checks


# -- the load processes: `python -m benchmarks.ingest load ...` ---------------------------------------------


@dataclass(slots=True)
class LoadReport:
    corpus: int = 0  # requests signed before the run
    corpus_build_s: float = 0.0
    signed_late: int = 0  # signed during the run because the corpus ran out
    sent: int = 0  # every request that got an answer, warm-up and tail included
    accepted: int = 0  # answered 202
    statuses: dict[str, int] = field(default_factory=dict)
    timed_calls: int = 0  # answered 202 inside the window
    window_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time inside the window
    errors: int = 0  # not 202, or no answer
    error_samples: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)  # timed requests only
    by_second: list[int] = field(default_factory=list)  # 202s in each second of the window

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text)


async def load_main(args: argparse.Namespace) -> int:
    import aiohttp

    report = LoadReport()
    kind = CloudEventsCorpus if args.format == "cloudevents" else Corpus
    corpus = kind(args.secret, args.id_prefix, args.body_bytes)
    began = time.perf_counter()
    corpus.fill(args.corpus)
    report.corpus, report.corpus_build_s = args.corpus, round(time.perf_counter() - began, 3)
    if len(corpus.body(0)) != args.body_bytes:
        raise SystemExit(f"the body is {len(corpus.body(0))} bytes, not {args.body_bytes}")
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 120)
        if not line.strip():
            return 3  # the harness went away
        times = json.loads(line)
        warmup_until, end_at = float(times["warmup_until"]), float(times["end_at"])
        report.window_s = end_at - warmup_until
        report.by_second = [0] * max(1, math.ceil(end_at - warmup_until))

        async def worker() -> None:
            while time.time() < end_at:
                headers, body = corpus.take(report)
                started = time.perf_counter()
                try:
                    async with session.post(args.url, data=body, headers=headers) as response:
                        answer = await response.read()
                        status = response.status
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    report.error(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.01)  # no hot loop against a failing server
                    continue
                latency = time.perf_counter() - started
                done = time.time()
                report.sent += 1
                statuses[status] += 1
                if status != 202:
                    report.error(f"HTTP {status}: {answer[:200].decode(errors='replace')}")
                    continue
                report.accepted += 1
                if warmup_until <= done < end_at:
                    report.timed_calls += 1
                    report.latencies_us.append(round(latency * 1e6))
                    second = int(done - warmup_until)
                    if second < len(report.by_second):
                        report.by_second[second] += 1

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, warmup_until - time.time()))
            before = time.process_time()
            await asyncio.sleep(max(0.0, end_at - time.time()))
            report.cpu_s = time.process_time() - before

        budget = max(0.0, end_at - time.time()) + CALL_TIMEOUT + 5
        await asyncio.wait_for(asyncio.gather(sample_cpu(), *(worker() for _ in range(args.connections))), budget)
    report.statuses = {str(k): v for k, v in sorted(statuses.items())}
    Path(args.out).write_text(json.dumps(asdict(report)))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="one load process: sign a corpus, say ready, POST it until end_at")
    load.add_argument("--url", required=True, help="http://127.0.0.1:PORT/hooks/SOURCE")
    load.add_argument("--secret", required=True, help="the source's whsec_ secret")
    load.add_argument("--id-prefix", required=True, help="webhook-id prefix, unique per process and run")
    load.add_argument("--connections", type=int, default=16, help="keep-alive connections, one request each")
    load.add_argument("--body-bytes", type=int, default=LOAD.body_bytes)
    load.add_argument("--corpus", type=int, default=10_000, help="requests signed before the run")
    load.add_argument("--format", choices=[CONNECTOR, "cloudevents"], default=CONNECTOR, help="the request kind")
    load.add_argument("--out", required=True, help="where to write the JSON report (must be last)")
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("--url must be on 127.0.0.1: this machine is shared")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(load_main(parse_args())))
