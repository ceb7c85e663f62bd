"""`BENCH_PROFILE=DIR`: py-spy samples the `eventbus serve` process of a scenario's first run over its timed
window and writes collapsed stacks to `DIR/<scenario>-eventbus.txt` (`--nonblocking`, 200 Hz, idle threads left
out; `BENCH_PROFILE_ARGS` appends py-spy flags, e.g. `--gil`). Profiled figures are slower: do not publish them."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import BenchContext, LoadWindow


def start(context: BenchContext, run: int, name: str, pid: int, window: LoadWindow) -> subprocess.Popen[bytes] | None:
    """py-spy on `pid` from now until the window ends (first run only; nothing without BENCH_PROFILE)."""
    if run != 1 or not os.environ.get("BENCH_PROFILE"):
        return None
    out = Path(os.environ["BENCH_PROFILE"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    time.sleep(max(0.0, window.start - time.time()))  # the window, not the warm-up
    seconds = max(1, math.ceil(window.end - time.time()))
    command = [
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--format", "raw",
        "--rate", "200", "--nonblocking", "--duration", str(seconds), "--output", str(out / f"{name}-eventbus.txt"),
        *shlex.split(os.environ.get("BENCH_PROFILE_ARGS", "")),
    ]  # fmt: skip
    return context.processes.start(command, role="client", log_path=out / f"{name}-py-spy.log")


def finish(context: BenchContext, profiler: subprocess.Popen[bytes] | None) -> None:
    """Let py-spy write its file (it stops by itself at the window's end), within a bound."""
    if profiler is None:
        return
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        context.processes.stop(profiler, timeout=5)
