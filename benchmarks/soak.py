"""Steady load with a short retention window: `soak`, disk use and RSS at the start, the middle and the end.

One run (SQLite): a receiver process and a fresh store with one webhook endpoint pointing at it; `eventbus serve`
starts with `EVENTBUS_RETENTION` (default `30s`, `BENCH_SOAK_RETENTION` to change it) and
`EVENTBUS_UPKEEP_EVERY=10s` in its environment; a publisher process sends `rate` events/s (1 KiB JSON data, `batch`
per call) for `duration_s` × BENCH_SCALE (at least `min_duration_s`), each delivered to the receiver. Every
`duration ÷ samples` seconds the harness reads the size of the SQLite file and its `-wal` file and the server's
VmRSS. Reported: the samples nearest 10 %, 50 % and 100 % of the run (start, middle, end), and for disk and RSS the
mean of the last quarter of the samples ÷ the mean of the second quarter, which stays near 1 once retention prunes
as fast as events arrive (upkeep rounds make disk a sawtooth, so levels are compared, not single samples; at
BENCH_SCALE=1 the second quarter, 60–120 s, is past the first prunes). After the publisher stops every event must
be delivered within 60 s; the events left in the store after the server stops show whether retention pruned.
No baseline.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import at_most, scenario, stores
from benchmarks.deliver import delivery_problems, run_failed, stop_all
from benchmarks.harness import BenchContext, BenchError, Figures, LoadWindow, RunFigures, cpu_seconds
from benchmarks.webhooks import (
    Receiver,
    create_endpoint,
    finish,
    go,
    paced_args,
    publisher,
    read_status_mb,
    start_client,
    throughput_figures,
)


@dataclass(frozen=True, slots=True)
class SoakLoad:
    rate: float = 500.0  # events/s
    batch: int = 10
    duration_s: float = 240.0  # × BENCH_SCALE
    min_duration_s: float = 60.0  # two retention windows and a janitor round (30 s each, by default)
    samples: int = 24
    retention: str = "30s"  # EVENTBUS_RETENTION of the server (BENCH_SOAK_RETENTION overrides it)
    upkeep_every: str = "10s"  # EVENTBUS_UPKEEP_EVERY: retention rounds three times a window (the default is 30 s)
    flat_bound: float = 1.25  # mean of the last quarter ÷ mean of the second quarter that still counts as flat


LOAD = SoakLoad()


def _notes(report: dict[str, Any]) -> list[str]:
    e = report.get("extra") or {}
    if "disk_end_mb" not in e:
        return ["soak: no samples"]
    return [
        f"soak: disk (SQLite file + WAL) start {e['disk_start_mb']:.1f} MB, middle {e['disk_mid_mb']:.1f} MB, end "
        f"{e['disk_end_mb']:.1f} MB; RSS start {e['rss_start_mb']:.1f} MB, middle {e['rss_mid_mb']:.1f} MB, end "
        f"{e['rss_end_mb']:.1f} MB; {e['events_left']:,.0f} of {e['events_published']:,.0f} events left in the "
        f"store at the end (retention {report['config']['retention']})"
    ]


@scenario(
    "soak",
    max_runs=1,
    summary=f"steady {LOAD.rate:g} events/s published and delivered to one webhook endpoint for "
    f"{LOAD.duration_s:g} s × BENCH_SCALE with EVENTBUS_RETENTION={LOAD.retention}; disk and RSS over time",
    baseline=None,
    config={**asdict(LOAD), "retention": os.environ.get("BENCH_SOAK_RETENTION", LOAD.retention)},
    notes=_notes,
    targets=(
        at_most("extra.disk_growth", LOAD.flat_bound, "disk, last ÷ 2nd quarter (mean)"),
        at_most("extra.rss_growth", LOAD.flat_bound, "RSS, last ÷ 2nd quarter (mean)"),
    ),
)
def soak(context: BenchContext, run: int) -> RunFigures:
    if stores.store_choice().kind != "sqlite":
        raise BenchError("soak measures a SQLite file: run it without BENCH_STORE")
    return measure(context, run)


def disk_mb(database: Path) -> float:
    sizes = [p.stat().st_size for p in (database, database.with_name(database.name + "-wal")) if p.exists()]
    return sum(sizes) / 1e6


def growth(samples: list[dict[str, float]], key: str) -> float | None:
    """The mean of the last quarter of the samples ÷ the mean of the second quarter (≈ 1: flat). Means over a
    quarter (two upkeep rounds at scale 1) follow the level of the sawtooth, not one sample's place on it."""
    quarter = max(1, len(samples) // 4)
    second, last = samples[quarter : 2 * quarter], samples[-quarter:]
    if not second or not sum(s[key] for s in second):
        return None
    return round(statistics.fmean(s[key] for s in last) / statistics.fmean(s[key] for s in second), 3)


def nearest(samples: list[dict[str, float]], at: float) -> dict[str, float]:
    return min(samples, key=lambda s: abs(s["t"] - at))


def measure(context: BenchContext, run: int) -> RunFigures:
    from eventbus.signing import generate_secret

    directory = context.run_dir(run, "eventbus")
    database = directory / "eventbus.db"
    secret = generate_secret()
    retention = os.environ.get("BENCH_SOAK_RETENTION", LOAD.retention)
    duration = max(LOAD.min_duration_s, LOAD.duration_s * context.scale)
    receiver = Receiver(context, directory, secret)
    checks: dict[str, Any] = {"serve_extra_args": os.environ.get("BENCH_SERVE_ARGS", ""), "retention": retention}
    servers: list[stores.Server] = []
    samples: list[dict[str, float]] = []
    try:
        store = stores.Store.fresh(directory)  # SQLite: eventbus.db in the run's directory
        create_endpoint(store.url, receiver.url, secret)
        servers = stores.start_servers(
            context, directory, store, "--allow-destination", "127.0.0.1/32",
            extra_env={"EVENTBUS_RETENTION": retention, "EVENTBUS_UPKEEP_EVERY": LOAD.upkeep_every},
        )  # fmt: skip
        process = servers[0].process
        out_path, pub_log = directory / "publish.json", directory / "publish.log"
        client = start_client(
            context,
            [*publisher(servers[0].grpc, f"/bench/soak/run{run}", *paced_args(LOAD.rate, LOAD.batch)),
             "--out", str(out_path)],
            role="client", log_path=pub_log,
        )  # fmt: skip
        began = time.time()
        cpu_before = [cpu_seconds(process.pid), cpu_seconds(receiver.process.pid)]
        go(client, {"start_at": began, "warmup_until": began, "end_at": began + duration})
        for n in range(1, LOAD.samples + 1):  # paced reads of disk and RSS, not a wait for an event
            time.sleep(max(0.0, began + duration * n / LOAD.samples - time.time()))
            if process.poll() is not None:
                raise BenchError(f"eventbus serve exited with {process.returncode} during the soak")
            rss = read_status_mb(process.pid)["VmRSS"]
            samples.append({"t": round(time.time() - began, 1), "disk_mb": round(disk_mb(database), 1), "rss_mb": rss})
        paced = finish(context, client, out_path, pub_log, timeout=60)
        cpu_used = [cpu_seconds(process.pid) - cpu_before[0], cpu_seconds(receiver.process.pid) - cpu_before[1]]
        checks["published"], checks["publish_errors"] = paced["published"], paced["errors"]
        arrived = receiver.wait_for(paced["published"], timeout=60)
        checks["received_within_60s"] = arrived
        if paced["errors"] or arrived < paced["published"]:
            raise BenchError(
                f"{paced['published']} published ({paced['errors']} calls failed, e.g. {paced['error_samples'][:2]}), "
                f"{arrived} delivered within 60 s of the end"
            )
        report = receiver.report(directory / "received.json")
    except BenchError as exc:
        raise run_failed("soak", run, exc, servers) from None
    finally:
        exit_code = stop_all(context, servers, receiver, checks)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        left = int(conn.execute("SELECT COUNT(*) FROM events WHERE source LIKE '/bench/soak/%'").fetchone()[0])
    seconds = paced["finished_at"] - paced["started_at"]
    window = LoadWindow(start=paced["started_at"], end=paced["finished_at"])
    arrivals = report["arrivals"]
    figures: Figures = throughput_figures(arrivals, window, sorted(a - p for a, p in arrivals), cpu_used[0], 0.0)
    figures.client_cpu_pct = round(cpu_used[1] / seconds * 100, 1)
    start, mid, end = nearest(samples, 0.1 * duration), nearest(samples, 0.5 * duration), samples[-1]
    extra = {
        "duration_s": round(duration, 1),
        "events_published": paced["published"],
        "events_left": left,
        "disk_start_mb": start["disk_mb"],
        "disk_mid_mb": mid["disk_mb"],
        "disk_end_mb": end["disk_mb"],
        "rss_start_mb": round(start["rss_mb"], 1),
        "rss_mid_mb": round(mid["rss_mb"], 1),
        "rss_end_mb": round(end["rss_mb"], 1),
        # Upkeep rounds make disk a sawtooth (prune, checkpoint, grow again): compare levels, not single samples.
        "disk_growth": growth(samples, "disk_mb"),
        "rss_growth": growth(samples, "rss_mb"),
    }
    checks["samples"] = samples
    problems = delivery_problems(checks, report, servers, exit_code)
    if problems:
        raise BenchError(f"soak run {run}: " + "; ".join(problems))
    return RunFigures(server=figures, baseline=None, checks=checks, extra=extra)
