"""What `python -m benchmarks` prints and writes: the table of medians, the closing note of every figure against
the benchmarks issue's target, and `benchmarks/results/<scenario>.json` with the versions and the git revision."""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from benchmarks import Target
    from benchmarks.harness import ScenarioOutcome


@dataclass(frozen=True, slots=True)
class TargetCheck:
    target: Target
    value: float | None  # None: the scenario did not produce the figure (it failed, or the phase did not run)

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target.bound if self.target.at_least else self.value <= self.target.bound

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.target.figure,
            "label": self.target.label,
            "value": self.value,
            "bound": self.target.bound,
            "at_least": self.target.at_least,
            "met": self.met,
        }


def figure_of(report: dict[str, Any], path: str) -> float | None:
    """The number at a dotted path of a scenario's report (`medians.server.p99_ms`), None where there is none."""
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def check_targets(targets: Sequence[Target], report: dict[str, Any]) -> list[TargetCheck]:
    return [TargetCheck(target, figure_of(report, target.figure)) for target in targets]


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def median_extra(extras: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The median of each numeric scenario-specific figure, over the runs that have it."""
    names = {n for e in extras for n, v in e.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {n: round(_median([float(e[n]) for e in extras if n in e]), 3) for n in sorted(names)}


def median_figures(all_figures: Sequence[Any]) -> dict[str, float]:
    from benchmarks.harness import Figures  # at run time: harness imports this module

    names = [n for n in Figures.__dataclass_fields__ if n not in ("calls", "events", "errors", "events_by_second")]
    return {n: round(_median([float(getattr(f, n)) for f in all_figures]), 3) for n in names}


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def closing_note(outcomes: Sequence[ScenarioOutcome], targets: dict[str, Sequence[Target]]) -> str:
    """One line per target: the figure, its bound, met / MISSED (or not measured)."""
    lines = ["figures against the benchmarks issue's targets:"]
    for outcome in outcomes:
        for check in check_targets(targets.get(outcome.name, ()), outcome.report):
            side = "≥" if check.target.at_least else "≤"
            bound = f"{side} {_number(check.target.bound)}"
            if check.value is None:
                verdict, value = "NOT MEASURED", "-"
            else:
                verdict, value = ("met" if check.met else "MISSED"), _number(check.value)
            lines.append(f"  {outcome.name:<18} {check.target.label:<28} {value:>10}  target {bound:<10} {verdict}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    """A latency cell: `-` where the scenario has none (a stream has no per-call latency)."""
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


_COLUMNS = (
    ("scenario", "<"),
    ("target", "<"),
    ("calls/s", ">"),
    ("events/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("server CPU", ">"),
    ("load CPU", ">"),
    ("ratio", ">"),
)


def table(outcomes: Sequence[ScenarioOutcome]) -> str:
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        medians = outcome.report.get("medians")
        if not medians:
            rows.append((outcome.name, "FAILED", "", "", "", "", "", "", ""))
            continue
        ratio = outcome.report.get("ratio")
        for target in ("server", "baseline"):
            if target not in medians:
                continue
            m = medians[target]
            rows.append(
                (
                    outcome.name if target == "server" else "",
                    "eventbus" if target == "server" else "baseline",
                    f"{m['calls_per_s']:,.0f}",
                    f"{m['events_per_s']:,.0f}",
                    _ms(m["p50_ms"]),
                    _ms(m["p99_ms"]),
                    f"{m['server_cpu_pct']:.0f} %",
                    f"{m['client_cpu_pct']:.0f} %",
                    (f"{ratio:.2f}" if ratio is not None else "-") if target == "server" else "1",
                )
            )
    widths = [max(len(_COLUMNS[i][0]), *(len(r[i]) for r in rows)) for i in range(len(_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        parts = [f"{c:{a}{w}}" for c, (_, a), w in zip(cells, _COLUMNS, widths, strict=True)]
        return "| " + " | ".join(parts) + " |"

    head = line([c for c, _ in _COLUMNS])
    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == ">" else ("-" * (w + 2)) for (_, a), w in zip(_COLUMNS, widths, strict=True)
        )
        + "|"
    )
    return "\n".join([head, rule, *(line(r) for r in rows)])


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("grpcio", "protobuf", "eventbus"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_revision() -> str:
    """The commit of the code under test, `+modified` when eventbus/ or proto/ had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+modified" if git("status", "--porcelain", "--", "eventbus", "proto") else "")


def write_report(name: str, report: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(clean_nans(report), indent=2, allow_nan=False) + "\n")
    return path


def clean_nans(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean_nans(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_nans(v) for v in value]
    return value
