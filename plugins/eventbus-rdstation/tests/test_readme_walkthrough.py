"""The README's walk-through, run as written: its shell blocks, taken from README.md, run by bash in three
"terminals" (the RD Station double, `eventbus serve`, and the commands), against real processes.

Only what the README itself tells the reader to choose is set: the ports (`RD_PORT`, `EVENTBUS_GRPC_LISTEN`,
`EVENTBUS_HTTP_LISTEN`, `EVENTBUS_SERVER`, `RECEIVER_PORT`), so the test runs on free ones, and the store
(`EVENTBUS_STORE`: the test's SQLite file, or a PostgreSQL schema). The working directory stands for the repository
root: it holds `.venv`, a link to this interpreter's environment. A command the README gets wrong fails the test:
bash runs the blocks with `set -euo pipefail`, and each flow's outcome is checked in what the processes print.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Walk-through: a shop and RD Station in real time"
_READY = re.compile(r'"grpc": "([^"]+)", "http": "([^"]+)"')
_DOUBLE = re.compile(r"RD Station API double on http://127\.0\.0\.1:(\d+)")


def walkthrough() -> tuple[list[str], list[str]]:
    """The walk-through's `sh` blocks and `text` blocks (sample output), in order."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", text[start:end], re.S | re.M)
    return [body for kind, body in blocks if kind == "sh"], [body for kind, body in blocks if kind == "text"]


class Terminal:
    """One bash running a README block in its own process group (its `&` jobs too), output kept in files."""

    def __init__(self, name: str, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.out = cwd / f"{name}.out"
        self.err = cwd / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                ["bash", "-c", script], cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def log(self) -> str:
        return f"--- stdout\n{self.output()}\n--- stderr\n{self.err.read_text(errors='replace')}"

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def wait_for(check: Callable[[], Any], what: str, terminals: list[Terminal], within: float = 20.0) -> Any:
    """Poll the processes' output files (other processes: nothing to await) until `check` answers."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for terminal in terminals:
            if terminal.process.poll() not in (None, 0):
                raise AssertionError(f"{what}: a terminal exited with {terminal.process.returncode}\n{terminal.log()}")
        time.sleep(0.05)
    logs = "\n".join(terminal.log() for terminal in terminals)
    raise AssertionError(f"not seen in {within}s: {what}\n{logs}")


def free_port() -> int:
    """A port for the README's receiver, which takes a number (not 0) because the endpoint URL names it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects printed, in order, even two on one line (a background job writes when it likes)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        at = text.find("{", end)
    return found


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Terminal]]:
    running: list[Terminal] = []
    yield running
    for terminal in running:
        terminal.stop()


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path, store_url: str, started: list[Terminal]) -> None:
    blocks, samples = walkthrough()
    assert len(blocks) == 6, "terminal 1, terminal 2, terminal 3's settings and its three flows"
    rd_block, serve_block, *commands = blocks
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.prefix))
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_") and k not in ("RD_PORT", "PATH")}
    env["PATH"] = path  # the README puts .venv/bin on the PATH itself

    rd = Terminal("terminal-1", rd_block, root, {**env, "RD_PORT": "0"})
    started.append(rd)
    rd_port = wait_for(lambda: _DOUBLE.search(rd.output()), "the double's URL", [rd]).group(1)
    listen = {"EVENTBUS_GRPC_LISTEN": "127.0.0.1:0", "EVENTBUS_HTTP_LISTEN": "127.0.0.1:0"}
    serve_env = {**env, **listen, "EVENTBUS_STORE": store_url, "EVENTBUS_LOG_FORMAT": "json"}
    gateway = Terminal("terminal-2", serve_block, root, serve_env)
    started.append(gateway)
    ready = wait_for(lambda: _READY.search(gateway.err.read_text(errors="replace")), "serve ready", [gateway])
    grpc, http = ready.group(1), ready.group(2)

    chosen = {"RD_PORT": rd_port, "EVENTBUS_SERVER": grpc, "EVENTBUS_HTTP_LISTEN": http}
    chosen["RECEIVER_PORT"] = str(free_port())
    script = "set -euo pipefail\n" + "\n".join(commands)
    shell = Terminal("terminal-3", script, root, {**env, **chosen})
    started.append(shell)
    assert shell.process.wait(60) == 0, shell.log()

    # Flows 1 and 2: RD Station accepted a SALE (OAuth) and the conversion (API key), printed as the README shows.
    events = wait_for(lambda: len(lines(rd.output())) >= 2 and lines(rd.output()), "two events at RD", [rd, gateway])
    # Two subscriptions deliver on their own: the order they reach RD in is not the order they were sent in.
    assert sorted(e["via"] for e in events) == ["api_key", "oauth"], events
    sale = next(e for e in events if e["via"] == "oauth")
    conversion = next(e for e in events if e["via"] == "api_key")
    assert (sale["via"], sale["event_type"]) == ("oauth", "SALE")
    assert sale["payload"] == {"email": "ana@example.com", "value": 349.9, "funnel_name": "default"}
    printed = next(line for line in rd.output().splitlines() if '"SALE"' in line)
    [sample] = samples
    assert sample.strip() == printed.replace(sale["event_uuid"], "…"), "flow 1's sample output"
    assert (conversion["via"], conversion["event_type"]) == ("api_key", "CONVERSION")
    assert conversion["payload"] == {
        "conversion_identifier": "carrinho-abandonado",
        "email": "bia@example.com",
        "name": "Bia",
        "tags": ["loja"],
    }

    # Flow 3: `tail` printed the lead's event, and the receiver the signed webhook carrying it.
    def flow_3() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        printed = [line for line in lines(shell.output()) if line.get("type") == "rdstation.lead.converted"]
        tailed = [line for line in printed if "specversion" in line]  # tail: the event, CloudEvents JSON
        received = [line for line in printed if "specversion" not in line]  # the receiver: the webhook's body
        return (tailed, received) if tailed and received else None

    [tailed], [received] = wait_for(flow_3, "the lead at tail and at the receiver", [gateway])
    assert tailed["subject"] == "c2f3d2b3-7250-4d27-97f4-eef38be32f7f"
    assert received["data"]["contact"]["email"] == "lead@example.com"
