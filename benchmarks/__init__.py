"""The benchmark harness: `python -m benchmarks [SCENARIO ...]` (or `make bench`).

Every scenario starts a real `eventbus serve` process and, in the same run, the bare baseline it is compared
with; load comes from separate client processes. A scenario registers itself here with `@scenario(...)` in a
module listed in `SCENARIO_MODULES`; the harness (`benchmarks.harness`) repeats the runs, takes the medians,
prints a table and writes `benchmarks/results/<scenario>.json`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.harness import BenchContext, RunFigures

# Modules whose import registers scenarios, in the order `python -m benchmarks` runs them.
SCENARIO_MODULES: tuple[str, ...] = (
    "benchmarks.ingest",
    "benchmarks.ingest_ce",
    "benchmarks.publish",
    "benchmarks.deliver",
    "benchmarks.latency",
    "benchmarks.subscribe",
    "benchmarks.backlog",
    "benchmarks.soak",
)
# Earlier names that still work on the command line (their results file is the new name's).
ALIASES: dict[str, str] = {"delivery": "deliver"}

ScenarioRun = Callable[["BenchContext", int], "RunFigures"]
ScenarioNotes = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True, slots=True)
class Target:
    """A figure of the benchmarks issue's table and its bound: `figure` is a path into the scenario's report
    (`ratio`, `medians.server.p99_ms`, `extra.rss_peak_mb`, ...), `at_least` says which side of `bound` meets it."""

    figure: str
    bound: float
    at_least: bool
    label: str  # as the closing note prints it: "req/s ratio", "p99 ms", ...


def at_least(figure: str, bound: float, label: str) -> Target:
    return Target(figure, bound, True, label)


def at_most(figure: str, bound: float, label: str) -> Target:
    return Target(figure, bound, False, label)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: `run(context, run_number)` measures the server and its baseline (if it has one) once."""

    name: str
    summary: str  # what the server does under load
    baseline: str | None  # what the bare baseline does; None: the scenario has no baseline (absolute targets)
    config: dict[str, object]  # the knobs, written to the results file
    run: ScenarioRun
    notes: ScenarioNotes | None = None  # lines printed under the table, from the scenario's report
    stores: bool = False  # runs on the store BENCH_STORE / BENCH_PROCESSES choose (benchmarks.stores); else SQLite
    targets: tuple[Target, ...] = ()  # the targets, checked (and printed) in the closing note
    max_runs: int | None = None  # long scenarios (backlog, soak) run once whatever BENCH_RUNS says


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    summary: str,
    baseline: str | None,
    config: dict[str, object],
    notes: ScenarioNotes | None = None,
    stores: bool = False,
    targets: tuple[Target, ...] = (),
    max_runs: int | None = None,
) -> Callable[[ScenarioRun], ScenarioRun]:
    """Register `run` as the scenario `name` (`stores=True`: it honours BENCH_STORE and BENCH_PROCESSES)."""

    def register(run: ScenarioRun) -> ScenarioRun:
        if name in SCENARIOS:
            raise ValueError(f"benchmark scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(
            name=name,
            summary=summary,
            baseline=baseline,
            config=config,
            run=run,
            notes=notes,
            stores=stores,
            targets=targets,
            max_runs=max_runs,
        )
        return run

    return register


def load_scenarios() -> dict[str, Scenario]:
    for module in SCENARIO_MODULES:
        importlib.import_module(module)
    return SCENARIOS
