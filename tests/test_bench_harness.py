"""The harness's own rules, fast (no server): usage errors exit 2, a scenario whose baseline did not run fails,
targets are checked the way the closing note prints them (part of make test)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import SCENARIOS, at_least, at_most, load_scenarios, scenario
from benchmarks import report as report_module
from benchmarks.harness import BenchContext, BenchError, Figures, Pinning, RunFigures, run_scenario
from benchmarks.report import check_targets, closing_note, figure_of, table

ROOT = Path(__file__).resolve().parent.parent
ISSUE_SCENARIOS = {
    "ingest", "ingest-ce", "publish-unary", "publish-batch", "publish-batch-1sub", "deliver", "deliver-10",
    "latency", "subscribe", "backlog", "soak",
}  # fmt: skip


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_every_scenario_of_the_issue_is_listed() -> None:
    done = bench("--list")
    assert done.returncode == 0, done.stderr
    listed = {line.split(":")[0] for line in done.stdout.splitlines() if not line.startswith(" ")}
    assert listed == ISSUE_SCENARIOS


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["no-such-scenario"], {}, "unknown scenario no-such-scenario"),
        (["deliver"], {"BENCH_SCALE": "fast"}, "could not convert"),
        (["deliver"], {"BENCH_SCALE": "-1"}, "BENCH_SCALE='-1': expected a positive number"),
        (["deliver", "--runs", "0"], {}, "--runs must be at least 1"),
        (["ingest"], {"BENCH_STORE": "postgresql"}, "ingest: SQLite only"),
        (["deliver"], {"BENCH_STORE": "mysql"}, "BENCH_STORE='mysql': use sqlite or postgresql"),
        (["deliver"], {"BENCH_PROCESSES": "2"}, "BENCH_PROCESSES > 1 needs BENCH_STORE=postgresql"),
    ],
)
def test_usage_errors_exit_2_naming_the_setting(args: list[str], env: dict[str, str], message: str) -> None:
    done = bench(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr


def figures(calls_per_s: float) -> Figures:
    return Figures(calls_per_s, calls_per_s, 1.0, 2.0, 50.0, 10.0, int(calls_per_s), int(calls_per_s), 0)


@pytest.fixture
def results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Results files of the fake scenarios go to a temp dir, not benchmarks/results/."""
    monkeypatch.setattr(report_module, "RESULTS_DIR", tmp_path)
    load_scenarios()
    yield tmp_path
    for name in [n for n in SCENARIOS if n.startswith("test-")]:
        del SCENARIOS[name]


def register(name: str, baseline: str | None, run: Any) -> None:
    scenario(name, summary="test", baseline=baseline, config={}, targets=(at_least("ratio", 0.5, "ratio"),))(run)


def test_a_missing_baseline_fails_the_scenario(results_dir: Path) -> None:
    register("test-no-baseline", "a bare server", lambda context, run: RunFigures(figures(100), None))
    outcome = run_scenario("test-no-baseline", scale=0.1, runs=1, pinning=Pinning(False, (), (), "not pinned"))
    assert not outcome.ok
    assert outcome.error == "test-no-baseline run 1: the baseline did not run"
    assert (results_dir / "test-no-baseline.json").exists()


def test_a_scenario_that_raises_fails_and_reports_not_measured(results_dir: Path) -> None:
    def broken(context: BenchContext, run: int) -> RunFigures:
        raise BenchError("the server did not come up")

    register("test-broken", "a bare server", broken)
    outcome = run_scenario("test-broken", scale=0.1, runs=2, pinning=Pinning(False, (), (), "not pinned"))
    assert (outcome.ok, outcome.error) == (False, "the server did not come up")
    note = closing_note([outcome], {"test-broken": SCENARIOS["test-broken"].targets})
    assert "NOT MEASURED" in note
    assert "FAILED" in table([outcome])


def test_ratio_and_targets_of_a_complete_run(results_dir: Path) -> None:
    register("test-ok", "a bare server", lambda context, run: RunFigures(figures(40 + run), figures(100)))
    outcome = run_scenario("test-ok", scale=0.1, runs=3, pinning=Pinning(False, (), (), "not pinned"))
    assert outcome.ok, outcome.error
    assert outcome.report["ratio"] == 0.42  # median 42 ÷ median 100
    assert outcome.report["targets"] == [
        {"figure": "ratio", "label": "ratio", "value": 0.42, "bound": 0.5, "at_least": True, "met": False}
    ]
    assert "MISSED" in closing_note([outcome], {"test-ok": SCENARIOS["test-ok"].targets})


def test_figure_paths_and_bounds() -> None:
    report = {"ratio": 0.5, "medians": {"server": {"p99_ms": 21.0, "p50_ms": math.nan}}, "extra": {"flag": True}}
    checks = check_targets(
        [
            at_least("ratio", 0.5, "ratio"),
            at_most("medians.server.p99_ms", 20.0, "p99"),
            at_most("medians.server.p50_ms", 5.0, "p50"),
            at_most("extra.flag", 1.0, "a flag is not a figure"),
            at_most("extra.missing", 1.0, "missing"),
        ],
        report,
    )
    assert [c.met for c in checks] == [True, False, None, None, None]
    assert figure_of(report, "medians.server") is None
