"""`python -m benchmarks [SCENARIO ...]`: run the named scenarios (default: all), print the table, write
`benchmarks/results/<scenario>.json`. Exits 1 when a scenario or its baseline did not run (or its checks
failed), 2 on a usage error. `BENCH_SCALE` (default 1.0) scales the timed window of each run (5 s at 1.0);
`BENCH_RUNS` (default 3) sets the number of runs whose median is reported; `BENCH_STORE` (sqlite, postgresql)
and `BENCH_PROCESSES` choose the store of the publish and delivery scenarios (`benchmarks.stores`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator

from benchmarks import ALIASES, load_scenarios
from benchmarks.harness import Pinning, ScenarioOutcome, env_float, run_scenario
from benchmarks.report import closing_note, table
from benchmarks.stores import store_choice


def main(argv: list[str] | None = None) -> int:
    scenarios = load_scenarios()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(scenarios)}")
    parser.add_argument("--runs", type=int, help="runs per scenario, median reported (env BENCH_RUNS; default 3)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for item in scenarios.values():
            print(f"{item.name}: {item.summary}\n    baseline: {item.baseline or 'none (absolute targets)'}")
        return 0
    args.scenarios = list(dict.fromkeys(ALIASES.get(name, name) for name in args.scenarios))
    unknown = [name for name in args.scenarios if name not in scenarios]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(scenarios)}")
    try:
        scale = env_float("BENCH_SCALE", 1.0)
        runs = args.runs if args.runs is not None else int(env_float("BENCH_RUNS", 3))
        store = store_choice()
    except ValueError as exc:
        parser.error(str(exc))
    if runs < 1:
        parser.error("--runs must be at least 1")
    names = args.scenarios or list(scenarios)
    if store.kind != "sqlite":
        # Only the scenarios that honour BENCH_STORE run on it (by default, all of those); the rest stay on SQLite.
        fixed = [name for name in names if not scenarios[name].stores]
        if args.scenarios and fixed:
            parser.error(f"{', '.join(fixed)}: SQLite only (unset BENCH_STORE and BENCH_PROCESSES to run it)")
        names = [name for name in names if scenarios[name].stores]
    outcomes: list[ScenarioOutcome] = []
    with sigterm_as_exit():
        pinning = Pinning.plan()
        print(
            f"benchmarks: {', '.join(names)}; BENCH_SCALE={scale:g}, {runs} runs each; store: {store.label}; "
            f"{pinning.note}",
            flush=True,
        )
        for name in names:
            print(f"{name}: {scenarios[name].summary}", flush=True)
            outcome = run_scenario(name, scale=scale, runs=runs, pinning=pinning)
            if outcome.error:
                stderr(f"{name} FAILED: {outcome.error}")
            outcomes.append(outcome)
    print()
    print(table(outcomes))
    print(
        f"\nmedians of {runs} runs (backlog and soak: 1); ratio = eventbus calls/s ÷ baseline calls/s (- : no "
        f"baseline); CPU = % of one core (server process(es), all load processes); store: {store.label}; "
        f"{pinning.note}"
    )
    for outcome in outcomes:
        notes = scenarios[outcome.name].notes
        if notes is not None and outcome.report.get("medians"):
            print("\n".join(notes(outcome.report)))
    print()
    print(closing_note(outcomes, {name: scenario.targets for name, scenario in scenarios.items()}))
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        stderr(f"benchmarks failed: {', '.join(failed)} (see benchmarks/results/<scenario>.json)")
        return 1
    return 0


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so every `finally` (which kills the subprocesses) still runs."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
