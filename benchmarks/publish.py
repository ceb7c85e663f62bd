"""Publish over gRPC: `publish-unary` (1 event per call) and `publish-batch` (100 events per call).

Each run starts a real `eventbus serve` on a fresh SQLite file (or, with `BENCH_STORE=postgresql`, a fresh
PostgreSQL schema shared by `BENCH_PROCESSES` processes: `benchmarks.stores`) and loads it from separate client
processes (`benchmarks.load`), checks with `ListEvents` that every acknowledged event was stored exactly once, then
starts the baseline (`benchmarks.baseline_grpc`: a bare grpc.aio server answering the same PublishRequest
with an empty PublishResponse) and loads it with the same client code and settings.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks import at_least, scenario
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
from benchmarks.stores import Server, Store, serve_command, start_servers, stop_servers, store_choice
from benchmarks.webhooks import Receiver, create_endpoints
from eventbus.signing import generate_secret
from eventbus.v1 import eventbus_pb2 as pb

LIST_PAGE = 1000  # the largest page ListEvents serves
LIST_TIMEOUT = 30.0
MAX_LOG_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class PublishLoad:
    processes: int  # client processes
    concurrency: int  # calls in flight per process
    events_per_call: int
    data_bytes: int  # JSON data per event
    subscriptions: int = 0  # webhook endpoints (patterns `**`) on a receiver that accepts: fan-out rows per event


def durable_store() -> str:
    """How the store under test commits, for the summary (BENCH_STORE; a bad value is reported when the run starts)."""
    try:
        choice = store_choice()
    except ValueError:
        return "the store BENCH_STORE names"
    if choice.kind == "sqlite":
        return "SQLite WAL, synchronous=FULL, group commit"
    return f"PostgreSQL, calls arriving together share a transaction, {choice.processes} eventbus process(es)"


UNARY = PublishLoad(processes=2, concurrency=32, events_per_call=1, data_bytes=1024)
BATCH = PublishLoad(processes=2, concurrency=8, events_per_call=100, data_bytes=1024)
BATCH_1SUB = PublishLoad(processes=2, concurrency=8, events_per_call=100, data_bytes=1024, subscriptions=1)


@scenario(
    "publish-unary",
    summary="gRPC Publish of 1 event (1 KiB JSON data) per call, 64 calls in flight from 2 client processes; "
    f"the server validates, stores durably ({durable_store()}) and answers",
    baseline="bare grpc.aio server, same PublishRequest parsed, empty PublishResponse, nothing else",
    config=asdict(UNARY),
    stores=True,
    targets=(at_least("ratio", 0.60, "calls/s ratio"),),
)
def publish_unary(context: BenchContext, run: int) -> RunFigures:
    return run_publish("publish-unary", UNARY, context, run)


@scenario(
    "publish-batch",
    summary="gRPC Publish of 100 events (1 KiB JSON data each) per call, 16 calls in flight from 2 client "
    "processes; all 100 stored atomically and durably per call",
    baseline="bare grpc.aio server, same 100-event PublishRequest parsed, empty PublishResponse",
    config=asdict(BATCH),
    stores=True,
    targets=(at_least("medians.server.events_per_s", 50_000, "events/s (0 subscriptions)"),),
)
def publish_batch(context: BenchContext, run: int) -> RunFigures:
    return run_publish("publish-batch", BATCH, context, run)


@scenario(
    "publish-batch-1sub",
    summary="publish-batch with one webhook subscription (patterns **) to a bare aiohttp receiver that accepts: "
    "each event also writes its delivery row, and the dispatcher delivers meanwhile",
    baseline=None,
    config=asdict(BATCH_1SUB),
    stores=True,
    targets=(at_least("medians.server.events_per_s", 25_000, "events/s (1 subscription)"),),
)
def publish_batch_1sub(context: BenchContext, run: int) -> RunFigures:
    server, checks = measure_eventbus("publish-batch-1sub", BATCH_1SUB, context, run)
    return RunFigures(server=server, baseline=None, checks=checks)


def run_publish(name: str, load: PublishLoad, context: BenchContext, run: int) -> RunFigures:
    server, checks = measure_eventbus(name, load, context, run)
    baseline = measure_baseline(name, load, context, run)
    return RunFigures(server=server, baseline=baseline, checks=checks)


def measure_eventbus(name: str, load: PublishLoad, context: BenchContext, run: int) -> tuple[Figures, dict[str, Any]]:
    directory = context.run_dir(run, "eventbus")
    store = Store.fresh(directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "store": store.choice.label}
    servers: list[Server] = []
    receiver: Receiver | None = None
    try:
        if load.subscriptions:
            secret = generate_secret()
            receiver = Receiver(context, directory, secret)
            urls = [f"{receiver.url}/{n}" for n in range(load.subscriptions)]
            checks["subscriptions"] = len(create_endpoints(store.url, urls, secret))
            servers = start_servers(context, directory, store, "--allow-destination", "127.0.0.1/32")
        else:
            servers = start_servers(context, directory, store)
        log_path = servers[0].log_path
        targets = ",".join(server.grpc for server in servers)  # the load's tasks take turns over the processes
        starting = next((r for r in read_json_log(log_path) if r.get("event") == "server_starting"), {})
        checks["server_loop"] = starting.get("loop", "unknown")
        source_prefix = f"/bench/{name}/run{run}/"
        reports, window, server_cpu = run_load(
            context.processes,
            load_commands(targets, load, directory, source_prefix, check_results=True),
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=[server.process.pid for server in servers],
        )
        exited = [server.process for server in servers if server.process.poll() is not None]
        if exited:
            samples = [sample for r in reports for sample in r["error_samples"]]
            failed = sum(int(r["errors"]) for r in reports)
            raise BenchError(
                f"eventbus serve exited with {exited[0].returncode} during the load; {failed} calls failed, "
                f"e.g. {samples[:3]}"
            )
        figures = figures_from_reports(reports, window, server_cpu, events_key="timed_events")
        sent = sum(int(r["acked_events"]) for r in reports)
        not_duplicate = sum(int(r["not_duplicate"]) for r in reports)
        listing_began = time.monotonic()
        stored, distinct = count_stored(servers[0].grpc, source_prefix, sent)
        checks["list_events_s"] = round(time.monotonic() - listing_began, 2)
        checks.update(
            {
                "events_acknowledged": sent,
                "results_not_duplicate": not_duplicate,
                "events_listed": stored,
                "distinct_source_id_listed": distinct,
                "client_errors": figures.errors,
                "client_error_samples": [s for r in reports for s in r["error_samples"]][:MAX_LOG_SAMPLES],
                "bad_responses": sum(int(r["bad_results"]) for r in reports),
            }
        )
    except BenchError as exc:
        issues = servers_log_issues(servers)
        last = f"\nlast lines:\n{tail(servers[0].log_path, 5)}" if servers else ""
        raise BenchError(
            f"{name} run {run}: {exc}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}\n"
            + "\n".join(issues["server_log_samples"])
            + last
        ) from None
    finally:
        codes = stop_servers(context, servers)
        if receiver is not None:
            checks["deliveries_received"] = receiver.count() if receiver.process.poll() is None else None
            receiver.stop()
        exit_code = next((code for code in codes if code != 0), 0)
        checks["server_exit_code"] = exit_code
        if len(codes) > 1:
            checks["server_exit_codes"] = codes
        checks.update(servers_log_issues(servers))
        checks.update(store.drop())
    problems = []
    if checks.get("client_errors"):
        problems.append(f"{checks['client_errors']} calls failed, e.g. {checks['client_error_samples']}")
    if checks.get("bad_responses"):
        problems.append(f"{checks['bad_responses']} responses did not answer one fresh result per event")
    if not checks["events_acknowledged"] == checks["results_not_duplicate"] == checks["events_listed"]:
        problems.append(
            f"stored events do not match: {checks['events_acknowledged']} acknowledged, "
            f"{checks['results_not_duplicate']} answered duplicate=false, {checks['events_listed']} listed"
        )
    if checks["distinct_source_id_listed"] != checks["events_listed"]:
        problems.append(f"{checks['events_listed'] - checks['distinct_source_id_listed']} listed events repeat")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        detail = "; ".join(problems)
        log_samples = "\n".join(checks["server_log_samples"])
        raise BenchError(
            f"{name} run {run}: {detail}\nserver log warnings/errors: {checks['server_log_issues']}\n{log_samples}"
        )
    return figures, checks


def eventbus_command(database: Path) -> list[str]:
    """`eventbus serve` on the SQLite file `database` as an operator runs it, plus `BENCH_SERVE_ARGS` (for
    experiments: `--log-level warning`)."""
    return serve_command(f"sqlite:///{database}")


def measure_baseline(name: str, load: PublishLoad, context: BenchContext, run: int) -> Figures:
    directory = context.run_dir(run, "baseline")
    log_path = directory / "server.log"
    command = [sys.executable, "-m", "benchmarks.baseline_grpc", "--listen", "127.0.0.1:0"]
    process = context.processes.start(command, role="server", log_path=log_path, cwd=directory)
    try:
        ready = wait_for_log_event(process, log_path, "server_ready")
        context.pinning.apply(process.pid, "server")
        reports, window, server_cpu = run_load(
            context.processes,
            load_commands(
                str(ready["grpc"]), load, directory, f"/bench/{name}/run{run}/baseline/", check_results=False
            ),
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=process.pid,
        )
    finally:
        context.processes.stop(process)
    figures = figures_from_reports(reports, window, server_cpu, events_key="timed_events")
    if figures.errors:
        samples = [s for r in reports for s in r["error_samples"]]
        raise BenchError(f"{name} run {run}: the baseline failed {figures.errors} calls, e.g. {samples[:3]}")
    return figures


def load_commands(
    target: str, load: PublishLoad, directory: Path, source_prefix: str, *, check_results: bool
) -> list[list[str]]:
    commands = []
    for index in range(load.processes):
        command = [
            sys.executable, "-m", "benchmarks.load",
            "--target", target,
            "--concurrency", str(load.concurrency),
            "--events-per-call", str(load.events_per_call),
            "--data-bytes", str(load.data_bytes),
            "--source", f"{source_prefix}p{index}",
        ]  # fmt: skip
        if check_results:
            command.append("--check-results")
        commands.append([*command, "--out", str(directory / f"load-{index}.json")])
    return commands


def count_stored(target: str, source_prefix: str, expected: int) -> tuple[int, int]:
    """Page through the whole log: (events of this run, distinct (source, id) among them)."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    listed = 0
    seen: set[tuple[str, str]] = set()
    with grpc.insecure_channel(target, options=options) as channel:
        list_events = channel.unary_unary(
            "/eventbus.v1.EventBus/ListEvents",
            request_serializer=pb.ListEventsRequest.SerializeToString,
            response_deserializer=pb.ListEventsResponse.FromString,
        )
        token = ""
        for _ in range(expected // LIST_PAGE + 100):  # bounded: a few pages beyond what should be there
            try:
                page: pb.ListEventsResponse = list_events(
                    pb.ListEventsRequest(page_size=LIST_PAGE, page_token=token), timeout=LIST_TIMEOUT
                )
            except grpc.RpcError as exc:
                raise BenchError(
                    f"ListEvents failed after {listed} events: {exc.code().name}: {exc.details()}"
                ) from None
            for stored in page.events:
                if stored.event.source.startswith(source_prefix):
                    listed += 1
                    seen.add((stored.event.source, stored.event.id))
            token = page.next_page_token
            if not token:
                return listed, len(seen)
    raise BenchError(f"ListEvents still had pages after {expected // LIST_PAGE + 100} pages of {LIST_PAGE}")


def servers_log_issues(servers: Sequence[Server]) -> dict[str, Any]:
    """`log_issues` of every server's log together."""
    lines, issues, samples = 0, Counter[str](), []
    for server in servers:
        found = log_issues(server.log_path)
        lines += found["server_log_lines"]
        issues.update(found["server_log_issues"])
        samples.extend(found["server_log_samples"])
    return {
        "server_log_lines": lines,
        "server_log_issues": dict(issues),
        "server_log_samples": samples[:MAX_LOG_SAMPLES],
    }


def log_issues(log_path: Path) -> dict[str, Any]:
    """Warnings, errors and non-JSON lines (tracebacks, gRPC core messages) of a server log."""
    issues: Counter[str] = Counter()
    samples: list[str] = []
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    records = {id(r): r for r in read_json_log(log_path)}
    json_lines = {line for line in lines if line.startswith("{")}
    for record in records.values():
        level = str(record.get("level", "info")).lower()
        if level in ("warning", "error", "critical", "exception"):
            key = f"{level}:{record.get('event')}"
            if record.get("event") == "grpc_call":
                key += f":{record.get('code')}"
            issues[key] += 1
            if len(samples) < MAX_LOG_SAMPLES:
                samples.append(str(record))
    for line in lines:
        if line not in json_lines and line.strip():
            issues["non_json_line"] += 1
            if len(samples) < MAX_LOG_SAMPLES:
                samples.append(line)
    return {"server_log_lines": len(lines), "server_log_issues": dict(issues), "server_log_samples": samples}
