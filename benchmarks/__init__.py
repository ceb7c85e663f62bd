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
SCENARIO_MODULES: tuple[str, ...] = ("benchmarks.publish", "benchmarks.delivery", "benchmarks.ingest")

ScenarioRun = Callable[["BenchContext", int], "RunFigures"]
ScenarioNotes = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: `run(context, run_number)` measures the server and its baseline once."""

    name: str
    summary: str  # what the server does under load
    baseline: str  # what the bare baseline does
    config: dict[str, object]  # the knobs, written to the results file
    run: ScenarioRun
    notes: ScenarioNotes | None = None  # lines printed under the table, from the scenario's report
    stores: bool = False  # runs on the store BENCH_STORE / BENCH_PROCESSES choose (benchmarks.stores); else SQLite


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    summary: str,
    baseline: str,
    config: dict[str, object],
    notes: ScenarioNotes | None = None,
    stores: bool = False,
) -> Callable[[ScenarioRun], ScenarioRun]:
    """Register `run` as the scenario `name` (`stores=True`: it honours BENCH_STORE and BENCH_PROCESSES)."""

    def register(run: ScenarioRun) -> ScenarioRun:
        if name in SCENARIOS:
            raise ValueError(f"benchmark scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(
            name=name, summary=summary, baseline=baseline, config=config, run=run, notes=notes, stores=stores
        )
        return run

    return register


def load_scenarios() -> dict[str, Scenario]:
    for module in SCENARIO_MODULES:
        importlib.import_module(module)
    return SCENARIOS
