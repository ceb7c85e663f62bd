"""Shared machinery: scale and runs, CPU pinning, subprocesses that always die, load processes started in
lock-step, statistics and the results files (the table and the targets: `benchmarks.report`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0  # seconds a server or a load process gets to come up
STOP_TIMEOUT = 20.0  # seconds a server gets to exit after SIGTERM before SIGKILL
DEFAULT_DURATION = 5.0  # timed window per run at BENCH_SCALE=1
DEFAULT_WARMUP = 1.0


def env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={text!r}: expected a positive number")
    return value


# -- CPU pinning -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pinning:
    """Server on the first allowed CPU, everything else (load, this harness) on the others."""

    pinned: bool
    server_cpus: tuple[int, ...]
    client_cpus: tuple[int, ...]
    note: str
    allowed: tuple[int, ...] = ()  # the CPUs this process could use before pinning

    @classmethod
    def plan(cls) -> Pinning:
        if not hasattr(os, "sched_setaffinity"):
            return cls(False, (), (), "not pinned: os.sched_setaffinity is unavailable on this platform")
        allowed = tuple(sorted(os.sched_getaffinity(0)))
        if len(allowed) < 2:
            return cls(False, (), (), f"not pinned: only {len(allowed)} CPU allowed", allowed)
        server, clients = allowed[:1], allowed[1:]
        try:
            os.sched_setaffinity(0, clients)  # the harness itself stays off the server's core
        except OSError as exc:
            return cls(False, (), (), f"not pinned: sched_setaffinity failed ({exc})", allowed)
        note = f"pinned: server on CPU {_cpus(server)}, load generators and harness on CPU {_cpus(clients)}"
        return cls(True, server, clients, note, allowed)

    def apply(self, pid: int, role: str) -> None:
        """Pin every thread of `pid` (threads started later inherit the main thread's mask)."""
        if not self.pinned:
            return
        cpus = self.server_cpus if role == "server" else self.client_cpus
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = [pid]
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                os.sched_setaffinity(tid, cpus)


def _cpus(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


# -- subprocesses ------------------------------------------------------------------------------------------


class Processes:
    """Every subprocess of a scenario; `close()` (called from a `finally`) kills whatever still runs."""

    def __init__(self, pinning: Pinning) -> None:
        self.pinning = pinning
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: Sequence[str],
        *,
        role: str,
        log_path: Path,
        cwd: Path | None = None,
        pipes: bool = False,
        pass_fds: Sequence[int] = (),
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command` with stderr to `log_path`; `pipes` gives it a stdin and a stdout to talk on;
        `pass_fds` are inherited (a bound socket); `extra_env` is added to this process's environment."""
        env = {**os.environ, **(extra_env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stderr=log,
                cwd=cwd or ROOT,
                env=env,
                pass_fds=tuple(pass_fds),
            )
        self._running.append(process)
        self.pinning.apply(process.pid, role)
        return process

    def stop(self, process: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._forget(process)
        return process.returncode

    def close(self) -> None:
        for process in self._running:
            if process.poll() is None:
                process.kill()
        for process in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._running.clear()

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if process in self._running:
            self._running.remove(process)


def wait_for_log_event(
    process: subprocess.Popen[bytes], log_path: Path, event: str, timeout: float = READY_TIMEOUT
) -> dict[str, Any]:
    """The first JSON log line of `log_path` whose "event" is `event` (synchronised on the log, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_json_log(log_path):
            if record.get("event") == event:
                return record
        if process.poll() is not None:
            raise BenchError(
                f"{command_text(process)} exited with {process.returncode} before {event!r}:\n{tail(log_path)}"
            )
        time.sleep(0.02)
    raise BenchError(f"no {event!r} within {timeout:.0f} s:\n{tail(log_path)}")


def command_text(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    if isinstance(args, list | tuple):
        return " ".join(str(a) for a in args if a != sys.executable)
    return str(args)


def read_json_log(log_path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        records.append(record)
    return records


def tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """One line from the process's stdout, or BenchError when it does not come before `deadline`."""
    assert process.stdout is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise BenchError("a load process did not answer in time")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise BenchError(f"a load process exited with {process.wait(10)} before it was ready")
            buffer += chunk
    return buffer.decode(errors="replace").strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc (0 where /proc is missing)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class LoadWindow:
    """Absolute wall-clock times every load process agrees on: warm-up until `start`, measured until `end`."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def run_load(
    processes: Processes,
    commands: Sequence[Sequence[str]],
    *,
    log_dir: Path,
    warmup: float,
    duration: float,
    server_pid: int | Sequence[int],
) -> tuple[list[dict[str, Any]], LoadWindow, float]:
    """Run load processes in lock-step and return their JSON reports, the window and the server's CPU seconds
    in it (of every process in `server_pid`, when it lists several).

    Protocol: a load process prints `ready` once connected, then reads one JSON line
    `{"warmup_until": t0, "end_at": t1}` from stdin, loads until t1, and writes its report to the file named
    by its `--out` argument (the last two arguments of each command must be `--out PATH`).
    """
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    for index, command in enumerate(commands):
        out_path = Path(command[-1])
        process = processes.start(command, role="client", log_path=log_dir / f"load-{index}.log", pipes=True)
        started.append((process, out_path))
    deadline = time.monotonic() + READY_TIMEOUT
    for index, (process, _) in enumerate(started):
        try:
            line = read_line(process, deadline)
        except BenchError as exc:
            raise BenchError(f"{exc}:\n{tail(log_dir / f'load-{index}.log')}") from None
        if line != "ready":
            raise BenchError(f"a load process said {line!r} instead of 'ready':\n{tail(log_dir / f'load-{index}.log')}")
        processes.pinning.apply(process.pid, "client")
    now = time.time()
    window = LoadWindow(start=now + warmup, end=now + warmup + duration)
    go = json.dumps({"warmup_until": window.start, "end_at": window.end}).encode() + b"\n"
    for process, _ in started:
        assert process.stdin is not None
        process.stdin.write(go)
        process.stdin.close()
    server_pids = [server_pid] if isinstance(server_pid, int) else list(server_pid)
    time.sleep(max(0.0, window.start - time.time()))
    cpu_before = sum(cpu_seconds(pid) for pid in server_pids)
    time.sleep(max(0.0, window.end - time.time()))
    server_cpu = sum(cpu_seconds(pid) for pid in server_pids) - cpu_before
    reports: list[dict[str, Any]] = []
    for index, (process, out_path) in enumerate(started):
        try:
            code = process.wait(max(1.0, window.end + 30 - time.time()))
        except subprocess.TimeoutExpired:
            raise BenchError(f"load process {index} did not finish 30 s after its window") from None
        finally:
            processes.stop(process, timeout=1)
        if code != 0 or not out_path.exists():
            raise BenchError(f"load process {index} exited with {code}:\n{tail(log_dir / f'load-{index}.log')}")
        reports.append(json.loads(out_path.read_text()))
    return reports, window, server_cpu


# -- figures -----------------------------------------------------------------------------------------------


class BenchError(Exception):
    """A scenario could not run, or ran and its checks failed."""


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(slots=True)
class Figures:
    """What one target (the server, or its baseline) did in one timed window."""

    calls_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_pct: float  # CPU time of the server process ÷ window (100 = one core busy)
    client_cpu_pct: float  # CPU time of all load processes ÷ window
    calls: int  # completed in the window
    events: int
    errors: int
    events_by_second: list[int] = field(default_factory=list)  # all load processes, each second of the window


def figures_from_reports(
    reports: Sequence[dict[str, Any]],
    window: LoadWindow,
    server_cpu: float,
    *,
    events_key: str | None = None,
    by_second_key: str = "events_by_second",
) -> Figures:
    """Sum the load processes' reports of one timed window: calls (and events, when a call carries several:
    `events_key` names their count, else one event per call), latency percentiles, CPU, errors, per second."""
    seconds = window.seconds
    calls = sum(int(r["timed_calls"]) for r in reports)
    events = sum(int(r[events_key]) for r in reports) if events_key else calls
    if calls == 0:
        errors = [sample for r in reports for sample in r["error_samples"]]
        raise BenchError(f"no call completed in the {seconds:.1f} s window; errors: {errors[:3]}")
    latencies = sorted(latency for r in reports for latency in r["latencies_us"])
    return Figures(
        calls_per_s=round(calls / seconds, 1),
        events_per_s=round(events / seconds, 1),
        p50_ms=round(percentile(latencies, 50) / 1000, 3),
        p99_ms=round(percentile(latencies, 99) / 1000, 3),
        server_cpu_pct=round(server_cpu / seconds * 100, 1),
        client_cpu_pct=round(sum(float(r["cpu_s"]) for r in reports) / seconds * 100, 1),
        calls=calls,
        events=events,
        errors=sum(int(r["errors"]) for r in reports),
        events_by_second=[sum(column) for column in zip(*(r[by_second_key] for r in reports), strict=True)],
    )


@dataclass(slots=True)
class RunFigures:
    """One run of a scenario: the server and its baseline (None for the scenarios that have none), and what the
    checks saw."""

    server: Figures
    baseline: Figures | None
    checks: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures; numbers get a median

    @property
    def ratio(self) -> float:
        if self.baseline is None or not self.baseline.calls_per_s:
            return math.nan
        return self.server.calls_per_s / self.baseline.calls_per_s


@dataclass(slots=True)
class BenchContext:
    """What every scenario gets: the scale, the window, pinning, a temp dir and the subprocess registry."""

    scale: float
    runs: int
    warmup: float
    duration: float
    pinning: Pinning
    workdir: Path
    processes: Processes

    def run_dir(self, run: int, target: str) -> Path:
        path = self.workdir / f"run{run}-{target}"
        path.mkdir(parents=True, exist_ok=True)
        return path


# -- one scenario, end to end ------------------------------------------------------------------------------


@dataclass(slots=True)
class ScenarioOutcome:
    name: str
    ok: bool
    report: dict[str, Any]
    error: str | None = None


def run_scenario(name: str, *, scale: float, runs: int, pinning: Pinning) -> ScenarioOutcome:
    from benchmarks import SCENARIOS
    from benchmarks.report import check_targets, git_revision, median_extra, median_figures, versions, write_report
    from benchmarks.stores import config as store_config
    from benchmarks.stores import results_name

    scenario = SCENARIOS[name]
    runs = min(runs, scenario.max_runs or runs)
    duration = DEFAULT_DURATION * scale
    warmup = max(0.5, DEFAULT_WARMUP * min(scale, 1.0))
    report: dict[str, Any] = {
        "scenario": name,
        "summary": scenario.summary,
        "baseline": scenario.baseline,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": list(pinning.allowed),
        "platform": platform.platform(),
        "versions": versions(),
        "git_revision": git_revision(),
        "pinned": pinning.pinned,
        "pinning": pinning.note,
        "bench_scale": scale,
        "warmup_s": round(warmup, 3),
        "duration_s": round(duration, 3),
        "config": scenario.config,
        "store": store_config() if scenario.stores else {"kind": "sqlite", "processes": 1},
        "runs": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix=f"eventbus-bench-{name}-"))
    processes = Processes(pinning)
    context = BenchContext(scale, runs, warmup, duration, pinning, workdir, processes)
    all_runs: list[RunFigures] = []
    error: str | None = None
    try:
        for run in range(1, runs + 1):
            figures = scenario.run(context, run)
            if scenario.baseline is not None and figures.baseline is None:
                raise BenchError(f"{name} run {run}: the baseline did not run")
            all_runs.append(figures)
            report["runs"].append(
                {
                    "run": run,
                    "server": asdict(figures.server),
                    "baseline": asdict(figures.baseline) if figures.baseline is not None else None,
                    "ratio": round(figures.ratio, 3),
                    "checks": figures.checks,
                    **({"extra": figures.extra} if figures.extra else {}),
                }
            )
            print(f"  {name} run {run}/{runs}: {_run_line(figures)}", flush=True)
    except BenchError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        processes.close()
        if os.environ.get("BENCH_KEEP") and error:  # a failed scenario's logs, kept for a look
            print(f"  {name}: its files are kept in {workdir} (BENCH_KEEP)", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if all_runs:
        server = median_figures([r.server for r in all_runs])
        medians: dict[str, dict[str, float]] = {"server": server}
        baselines = [r.baseline for r in all_runs if r.baseline is not None]
        report["ratio"] = None
        if baselines:
            baseline = medians["baseline"] = median_figures(baselines)
            if baseline["calls_per_s"]:
                report["ratio"] = round(server["calls_per_s"] / baseline["calls_per_s"], 3)
            report["ratio_definition"] = "median server calls/s ÷ median baseline calls/s, same runs"
        report["medians"] = medians
        extra = median_extra([r.extra for r in all_runs])
        if extra:
            report["extra"] = extra
        # Load generators near 100 % of their cores measure themselves as much as the target: a lower bound.
        limit = 90.0 * max(1, len(pinning.client_cpus) if pinning.pinned else len(pinning.allowed) - 1)
        report["load_bound"] = [t for t, m in medians.items() if m["client_cpu_pct"] >= limit]
        report["targets"] = [check.as_dict() for check in check_targets(scenario.targets, report)]
    ok = error is None and len(all_runs) == runs
    report["ok"] = ok
    if error is not None:
        report["error"] = error
    write_report(results_name(name) if scenario.stores else name, report)
    return ScenarioOutcome(name, ok, report, error)


def _run_line(figures: RunFigures) -> str:
    s, b = figures.server, figures.baseline
    p99 = "-" if math.isnan(s.p99_ms) else f"{s.p99_ms:.2f} ms"  # a stream has no per-call latency
    line = f"server {s.calls_per_s:,.0f} calls/s {s.events_per_s:,.0f} events/s p99 {p99}"
    if b is None:
        return line
    return f"{line} | baseline {b.calls_per_s:,.0f} calls/s p99 {b.p99_ms:.2f} ms | ratio {figures.ratio:.2f}"
