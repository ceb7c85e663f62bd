"""CloudEvents over HTTP: `ingest-ce`, binary-mode POST `/events`, a unique `ce-id` per request, 1 KiB JSON data.

Each run, for eventbus: `eventbus serve` on a fresh SQLite store with its defaults (no source to create: `/events`
publishes what it is given); the load processes of `ingest` (`python -m benchmarks.ingest load --format
cloudevents`) build their corpus before the run (`ce-specversion`, `ce-type`, `ce-source` = one per process,
`ce-id` = a counter, `Content-Type: application/json`, a body of exactly 1024 bytes) and POST it over 32
keep-alive connections. Every answer must be a 202 (after the durable commit); after the server stops, the store
must hold exactly one event per 202, each (source, id) once. The baseline is `ingest`'s bare aiohttp handler
(`benchmarks.baseline_http`, its `POST /events` route) on the same core and the same kind of event loop.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import at_least, scenario
from benchmarks.corpus import SOURCE_ROOT, TYPE_CE
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
from benchmarks.ingest import LIST_PAGE, LOAD, load_checks, load_commands
from benchmarks.publish import eventbus_command, log_issues
from benchmarks.webhooks import in_store

if TYPE_CHECKING:
    from eventbus.store.base import Store


@scenario(
    "ingest-ce",
    summary=f"CloudEvents binary mode POST /events, a unique ce-id each, {LOAD.body_bytes} B JSON data, "
    f"{LOAD.connections} connections from {LOAD.processes} aiohttp client processes; stored durably, then 202",
    baseline="the bare aiohttp handler of ingest (reads the body, answers 202), its own process, same event loop",
    config={**asdict(LOAD), "format": "cloudevents binary mode"},
    targets=(at_least("ratio", 0.45, "req/s ratio"),),
)
def ingest_ce(context: BenchContext, run: int) -> RunFigures:
    server, checks, loop = measure_eventbus(context, run)
    baseline, baseline_checks = measure_baseline(context, run, loop)
    checks["baseline"] = baseline_checks
    return RunFigures(server=server, baseline=baseline, checks=checks)


def stored_events(database: Path, expected: int) -> dict[str, int]:
    """After the server stopped: the events of this benchmark in the log (its only events), paged through."""
    from eventbus.store.base import EventQuery

    async def count(store: Store) -> dict[str, int]:
        listed, wrong_type, after = 0, 0, 0
        keys: set[tuple[str, str]] = set()
        for _ in range(expected // LIST_PAGE + 100):
            page = await store.list_events(EventQuery(after_seq=after, limit=LIST_PAGE))
            if not page:
                return {"events_stored": listed, "distinct_stored": len(keys), "wrong_type": wrong_type}
            for stored in page:
                if stored.event.source.startswith(SOURCE_ROOT):
                    listed += 1
                    keys.add((stored.event.source, stored.event.id))
                    wrong_type += stored.event.type != TYPE_CE
            after = page[-1].seq
        raise BenchError(f"the store still had events after {expected // LIST_PAGE + 100} pages")

    return in_store(database, count)


def measure_eventbus(context: BenchContext, run: int) -> tuple[Figures, dict[str, Any], str]:
    directory = context.run_dir(run, "eventbus")
    database = directory / "eventbus.db"
    log_path = directory / "server.log"
    process = context.processes.start(eventbus_command(database), role="server", log_path=log_path, cwd=directory)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", "")}
    try:
        ready = wait_for_log_event(process, log_path, "server_ready")
        context.pinning.apply(process.pid, "server")
        starting = next((r for r in read_json_log(log_path) if r.get("event") == "server_starting"), {})
        loop = str(starting.get("loop", "asyncio"))
        checks["server_loop"] = loop
        url = f"http://{ready['http']}/events"
        reports, window, server_cpu = run_load(
            context.processes,
            load_commands(context, url, "unused", f"r{run}", directory, fmt="cloudevents"),
            log_dir=directory,
            warmup=context.warmup,
            duration=context.duration,
            server_pid=process.pid,
        )
        if process.poll() is not None:
            raise BenchError(f"eventbus serve exited with {process.returncode} during the load")
        figures = figures_from_reports(reports, window, server_cpu, by_second_key="by_second")
        checks.update(load_checks(reports))
    except BenchError as exc:
        issues = log_issues(log_path)
        raise BenchError(
            f"ingest-ce run {run}: {exc}\neventbus serve log: {issues['server_log_issues'] or 'no warnings or errors'}"
            + "\n" + "\n".join(issues["server_log_samples"]) + f"\nlast lines:\n{tail(log_path, 5)}"
        ) from None  # fmt: skip
    finally:
        exit_code = context.processes.stop(process)
        checks["server_exit_code"] = exit_code
        checks.update(log_issues(log_path))
    checks.update(stored_events(database, checks["answered_202"]))
    problems = []
    if checks["client_errors"]:
        problems.append(f"{checks['client_errors']} requests failed, e.g. {checks['client_error_samples']}")
    if checks["answered_202"] != checks["requests_sent"]:
        problems.append(f"{checks['requests_sent']} requests, {checks['answered_202']} answered 202")
    if not checks["answered_202"] == checks["events_stored"] == checks["distinct_stored"]:
        problems.append(
            f"{checks['answered_202']} answered 202, but the store holds {checks['events_stored']} events "
            f"({checks['distinct_stored']} distinct)"
        )
    if checks["wrong_type"]:
        problems.append(f"{checks['wrong_type']} stored events are not of type {TYPE_CE}")
    if checks["server_log_issues"]:
        problems.append(f"server log warnings/errors: {checks['server_log_issues']}")
    if exit_code != 0:
        problems.append(f"eventbus serve exited with {exit_code} after SIGTERM")
    if problems:
        raise BenchError(f"ingest-ce run {run}: " + "; ".join(problems))
    return figures, checks, loop


def measure_baseline(context: BenchContext, run: int, loop: str) -> tuple[Figures, dict[str, Any]]:
    directory = context.run_dir(run, "baseline")
    log_path = directory / "server.log"
    command = [sys.executable, "-m", "benchmarks.baseline_http", "--listen", "127.0.0.1:0", "--loop", loop]
    process = context.processes.start(command, role="server", log_path=log_path, cwd=directory)
    try:
        ready = wait_for_log_event(process, log_path, "server_ready")
        context.pinning.apply(process.pid, "server")
        reports, window, server_cpu = run_load(
            context.processes,
            load_commands(context, f"http://{ready['http']}/events", "unused", f"b{run}", directory, "cloudevents"),
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
            f"ingest-ce run {run}, baseline: {checks['requests_sent']} requests, {checks['answered_202']} answered "
            f"202 ({checks['statuses']}), e.g. {checks['client_error_samples'][:3]}"
        )
    return figures, checks
