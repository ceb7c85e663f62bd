"""The crash harness: a real `eventbus serve` under publish and delivery load, SIGKILLed at random moments (seeded)
and restarted on the same store, optionally with its PostgreSQL crashed and restarted too; then the checks of
`tests/chaos/verify.py` on the last incarnation.

The killer's randomness comes from one seed (`CHAOS_SEED` replays a run; it is printed first); the publishers,
the server and the machine bring their own timing, so a replay repeats the schedule of kills, not every race.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from eventbus.client import EventBusClient
from tests.chaos.load import Ledger, Publishers, Target
from tests.failure.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
READY_WITHIN = 30.0  # seconds a (re)started server may take to log `server_ready`
UPTIME = (0.2, 0.8)  # seconds a server serves before its kill, drawn uniformly
STARTUP_KILL_RATE = 0.15  # share of restarts killed again during start-up (before or just after `server_ready`)
DATABASE_DOWN = (0.2, 1.0)  # seconds PostgreSQL stays down when it is crashed
RECEIVER_FAIL_RATE = 0.03  # the receiver answers 503 to this share of requests: retries happen under the kills
_READY = re.compile(r'"grpc": "([^"]+)", "http": "([^"]+)"')


def seed_from_env() -> int:
    """`CHAOS_SEED` when set (to replay a run), else a fresh one."""
    text = os.environ.get("CHAOS_SEED", "").strip()
    if text:
        if not text.isdigit():
            raise ValueError(f"CHAOS_SEED={text!r}: expected a non-negative integer")
        return int(text)
    return random.SystemRandom().randrange(2**32)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run does: `kills` SIGKILLs of eventbus (or as many as fit in `seconds`, when given), and
    `database_crashes` stops of PostgreSQL (`cluster` required) at kills drawn from the seed."""

    seed: int
    kills: int
    seconds: float | None = None
    database_crashes: int = 0
    drain_within: float = 150.0  # seconds the backlog may take to drain after the last kill


@dataclass
class Incarnation:
    """One `eventbus serve` process; `ready` resolves to its addresses once it logs `server_ready` (to None when it
    exits before)."""

    number: int
    process: asyncio.subprocess.Process
    ready: asyncio.Future[Target | None]
    spawned_at: float = 0.0  # time.monotonic()
    first_line_at: float = 0.0  # when it logged its first line: the interpreter and the imports are done
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=30))  # the last lines, for a failure message
    errors: list[str] = field(default_factory=list)  # lines at level error, or with a traceback
    reader: asyncio.Task[None] | None = None


class ReceiverProcess:
    """`python -m tests.chaos.receiver` and what it reports: per (path, webhook-id) the statuses it answered."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[int]] = {}
        self.requests = 0
        self.changed = asyncio.Condition()
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, seed: int, fail_rate: float) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "tests.chaos.receiver", "--seed", str(seed), "--fail-rate", str(fail_rate)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert self._process.stdout is not None
        async with asyncio.timeout(READY_WITHIN):
            first = (await self._process.stdout.readline()).decode()
        assert first.startswith("listening "), f"the receiver did not start: {first!r}"
        self.port = int(first.split()[1])
        self._reader = asyncio.create_task(self._read(self._process.stdout))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            path, webhook_id, status = line.decode().split()
            self.answers.setdefault((path, webhook_id), []).append(int(status))
            self.requests += 1
            async with self.changed:
                self.changed.notify_all()

    def succeeded(self) -> set[tuple[str, str]]:
        """(path, webhook-id) answered 2xx at least once."""
        return {key for key, statuses in self.answers.items() if 200 in statuses}

    async def wait_until(self, predicate: Callable[[], bool], within: float, what: Callable[[], str]) -> None:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"receiver: not within {within:g} s: {what()}") from None

    async def close(self) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class Harness:
    """Runs one plan against `store` (a URL); `cluster` is the throwaway PostgreSQL the store lives on, if any."""

    def __init__(self, plan: Plan, store: str, workdir: Path, cluster: Cluster | None = None) -> None:
        assert plan.database_crashes == 0 or cluster is not None, "crashing the database needs a throwaway cluster"
        self.plan, self.store, self.workdir, self.cluster = plan, store, workdir, cluster
        self.rng = random.Random(plan.seed)
        self.ledger = Ledger()
        self.receiver = ReceiverProcess()
        self.publishers = Publishers(self._target, self.ledger)
        self.serving = asyncio.Event()
        self.current: Target | None = None
        self.incarnations: list[Incarnation] = []
        self.kills = 0
        self.startup_kills = 0  # killed before `server_ready`
        self.database_crashes: Counter[str] = Counter()  # by pg_ctl stop mode
        self.subscriptions: dict[str, str] = {}  # receiver path -> subscription id
        self.log_path = workdir / "chaos-server.log"
        self.timings: dict[str, float] = {}
        self.last_kill = 0.0  # time.monotonic() at the end of the kill phase
        # Per incarnation that got to `server_ready`: (spawn to first log line, first log line to ready) in seconds.
        self.startup_seconds: list[tuple[float, float]] = []

    async def _target(self) -> Target | None:
        """The serving incarnation (waiting while there is none); None once the publishers are stopping."""
        while not self.publishers.stopping:
            if self.current is not None:
                return self.current
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # re-checks `stopping` now and then
                    await self.serving.wait()
        return None

    # -- processes -----------------------------------------------------------------------------------------

    async def _spawn(self) -> Incarnation:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "eventbus", "serve", "--store", self.store, "--log-format", "json", "--shutdown-grace", "2"),
            *("--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--allow-destination", "127.0.0.1/32"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workdir,
            # A killed server's leases: released when SQLite is opened again; on PostgreSQL they expire, after the
            # attempt timeouts and this margin (30 s by default), which is the drain's wait after the last kill.
            env={**os.environ, "EVENTBUS_LEASE_MARGIN": "3"},
            limit=4 * 1024 * 1024,  # a log line with a traceback may be long
        )
        incarnation = Incarnation(
            len(self.incarnations), process, asyncio.get_running_loop().create_future(), spawned_at=time.monotonic()
        )
        incarnation.reader = asyncio.create_task(self._read_log(incarnation))
        self.incarnations.append(incarnation)
        return incarnation

    async def _read_log(self, incarnation: Incarnation) -> None:
        assert incarnation.process.stderr is not None
        with self.log_path.open("a") as log:
            while raw := await incarnation.process.stderr.readline():
                line = raw.decode(errors="replace")
                incarnation.first_line_at = incarnation.first_line_at or time.monotonic()
                incarnation.tail.append(line)
                if '"level": "error"' in line or "Traceback" in line:
                    incarnation.errors.append(line)
                log.write(f"[{incarnation.number}] {line}")
                if not incarnation.ready.done() and (match := _READY.search(line)):
                    incarnation.ready.set_result(Target(incarnation.number, match.group(1), match.group(2)))
        if not incarnation.ready.done():
            incarnation.ready.set_result(None)

    async def _serve(self) -> Incarnation:
        """Start an incarnation, wait for its `server_ready`, and point the load at it."""
        incarnation = await self._spawn()
        target: Target | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WITHIN):
                target = await asyncio.shield(incarnation.ready)
        if target is None:
            tail = "".join(incarnation.tail)
            raise AssertionError(f"server {incarnation.number} not ready in {READY_WITHIN:g} s:\n{tail}")
        ready = time.monotonic()
        self.startup_seconds.append(
            (incarnation.first_line_at - incarnation.spawned_at, ready - incarnation.first_line_at)
        )
        self.current = target
        self.serving.set()
        return incarnation

    async def _kill(self, incarnation: Incarnation) -> None:
        """SIGKILL (the load is told first, so it waits for the next incarnation instead of spinning)."""
        self.serving.clear()
        self.current = None
        if not incarnation.ready.done() or incarnation.ready.result() is None:
            self.startup_kills += 1
        incarnation.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(30):
            code = await incarnation.process.wait()
            if incarnation.reader is not None:
                await incarnation.reader
        assert code == -signal.SIGKILL, f"server {incarnation.number} exited with {code} before its kill"
        self.kills += 1

    async def _crash_database(self) -> None:
        assert self.cluster is not None
        mode = self.rng.choice(("immediate", "immediate", "fast"))
        await asyncio.to_thread(self.cluster.stop, mode)
        await asyncio.sleep(self.rng.uniform(*DATABASE_DOWN))  # the outage, part of the schedule
        await asyncio.to_thread(self.cluster.start)
        self.database_crashes[mode] += 1

    # -- the run -------------------------------------------------------------------------------------------

    async def _setup(self, first: Target) -> None:
        """Two webhook endpoints: `/a` gets `order.*`, `/b` every event whose data has `even: true`."""
        async with EventBusClient(first.grpc, timeout=15) as client:
            for path, patterns, content in (("/a", ["order.*"], None), ("/b", ["**"], {"data.even": True})):
                created = await client.create_subscription(
                    patterns=patterns,
                    filter=json.dumps(content) if content else None,
                    options={"url": self.receiver.url(path), "timeout": 1},
                    retry_schedule=[timedelta(seconds=1)] * 30,  # retries soon, and never exhausted by kills
                )
                self.subscriptions[path] = created.id

    def _more_kills(self, began: float) -> bool:
        if self.plan.seconds is not None and time.monotonic() - began >= self.plan.seconds:
            return False
        return self.kills < self.plan.kills

    async def _kill_loop(self, serving: Incarnation) -> Incarnation:
        began = time.monotonic()
        # The database crashes come before kills drawn among those expected (a time-limited run makes about one
        # kill every 2 s); one whose kill was skipped (a start-up kill counts two) comes at the next round, and any
        # left at the end under the last incarnation.
        expected = self.plan.kills if self.plan.seconds is None else min(self.plan.kills, int(self.plan.seconds / 2))
        crashes = sorted(self.rng.sample(range(max(expected, 1)), min(self.plan.database_crashes, expected)))
        while self._more_kills(began):
            await asyncio.sleep(self.rng.uniform(*UPTIME))  # the moment of the kill: the chaos schedule
            if crashes and self.kills >= crashes[0]:
                crashes.pop(0)
                await self._crash_database()
                await asyncio.sleep(self.rng.uniform(*UPTIME))  # serving again on the restarted database
            await self._kill(serving)
            if self._more_kills(began) and self.rng.random() < STARTUP_KILL_RATE:
                starting = await self._spawn()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.rng.uniform(0.05, 0.8)):
                        await asyncio.shield(starting.ready)
                await self._kill(starting)
            serving = await self._serve()
        for _ in crashes:
            await asyncio.sleep(self.rng.uniform(*UPTIME))
            await self._crash_database()
        return serving

    async def run(self) -> Incarnation:
        """Everything up to the checks: returns the last incarnation, serving, with the load stopped and the
        receiver still up (`verify.check` reads both; `close` ends them)."""
        started = time.monotonic()
        await self.receiver.start(self.plan.seed, RECEIVER_FAIL_RATE)
        first = await self._serve()
        assert self.current is not None
        await self._setup(self.current)
        self.publishers.start()
        last = await self._kill_loop(first)
        self.timings["kill_phase_s"] = time.monotonic() - started
        self.last_kill = time.monotonic()
        # The last incarnation takes load a little before the load stops: the final restart is tested too.
        await asyncio.sleep(self.rng.uniform(*UPTIME))
        await self.publishers.stop()
        return last

    async def close(self, last: Incarnation | None) -> int | None:
        """SIGTERM the last incarnation (its exit code is returned), kill any other left, stop the receiver."""
        code: int | None = None
        if not self.publishers.stopping:
            await self.publishers.stop()
        for incarnation in self.incarnations:
            if incarnation.process.returncode is not None:
                continue
            if incarnation is last:
                incarnation.process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(20):
                        code = await incarnation.process.wait()
                except TimeoutError:
                    pass
            if incarnation.process.returncode is None:
                incarnation.process.kill()
                await incarnation.process.wait()
            if incarnation.reader is not None:
                await asyncio.gather(incarnation.reader, return_exceptions=True)
        await self.receiver.close()
        return code
