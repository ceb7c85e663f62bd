"""Which store the scenarios run `eventbus serve` on, and how many processes share it.

- `BENCH_STORE=sqlite` (the default): a fresh SQLite file in the run's directory, one process.
- `BENCH_STORE=postgresql`: a fresh schema (`bench_<random>`) in the `test` database of the local PostgreSQL
  (`BENCH_PG_SERVER`, default `postgresql://postgres@127.0.0.1:5432/test`), dropped when the run ends.
- `BENCH_PROCESSES=N` (default 1; PostgreSQL only): N `eventbus serve` processes on that one store, all pinned
  to the server core(s); the load is spread over them (gRPC load tasks and publish calls take turns).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import BenchContext, BenchError, wait_for_log_event

DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class StoreChoice:
    kind: str  # sqlite | postgresql
    processes: int
    pg_server: str

    @property
    def label(self) -> str:
        if self.kind == "sqlite":
            return "sqlite"
        return f"postgresql, {self.processes} process{'es' if self.processes > 1 else ''}"


def store_choice() -> StoreChoice:
    """The store of this benchmark run, from `BENCH_STORE`, `BENCH_PROCESSES` and `BENCH_PG_SERVER`."""
    kind = os.environ.get("BENCH_STORE", "").strip().lower() or "sqlite"
    if kind == "postgres":
        kind = "postgresql"
    if kind not in ("sqlite", "postgresql"):
        raise ValueError(f"BENCH_STORE={kind!r}: use sqlite or postgresql")
    text = os.environ.get("BENCH_PROCESSES", "").strip() or "1"
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise ValueError(f"BENCH_PROCESSES={text!r}: a number of processes from 1 to 16")
    processes = int(text)
    if kind == "sqlite" and processes != 1:
        raise ValueError("BENCH_PROCESSES > 1 needs BENCH_STORE=postgresql: a SQLite file has one process")
    server = os.environ.get("BENCH_PG_SERVER", "").strip() or DEFAULT_PG_SERVER
    return StoreChoice(kind, processes, server)


def config() -> dict[str, object]:
    """The store settings, for the results file (`config.store`)."""
    try:
        choice = store_choice()
    except ValueError as exc:
        return {"error": str(exc)}
    found: dict[str, object] = {"kind": choice.kind, "processes": choice.processes}
    if choice.kind == "postgresql":
        found["server"] = choice.pg_server
    return found


def results_name(scenario: str) -> str:
    """The results file's name: `<scenario>` on SQLite (as always), `<scenario>-postgresql-<N>p` otherwise."""
    choice = store_choice()
    return scenario if choice.kind == "sqlite" else f"{scenario}-postgresql-{choice.processes}p"


async def _drop_schema(server: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def _check_server(server: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(server, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


@dataclass
class Store:
    """One fresh store for one target of one run; `drop()` removes it (PostgreSQL) once no server has it open."""

    choice: StoreChoice
    url: str
    schema: str | None = None

    @classmethod
    def fresh(cls, directory: Path) -> Store:
        choice = store_choice()
        if choice.kind == "sqlite":
            return cls(choice, f"sqlite:///{directory / 'eventbus.db'}")
        try:
            asyncio.run(_check_server(choice.pg_server))
        except Exception as exc:
            raise BenchError(f"BENCH_STORE=postgresql: {choice.pg_server} does not answer: {exc}") from None
        schema = f"bench_{uuid.uuid4().hex[:16]}"
        separator = "&" if "?" in choice.pg_server else "?"
        return cls(choice, f"{choice.pg_server}{separator}schema={schema}", schema)

    def drop(self) -> dict[str, str]:
        """Drop the schema (PostgreSQL); what went wrong, for the run's checks (a failure does not fail the run)."""
        if self.schema is None:
            return {}
        try:
            asyncio.run(_drop_schema(self.choice.pg_server, self.schema))
        except Exception as exc:
            return {"store_drop_error": f"DROP SCHEMA {self.schema}: {type(exc).__name__}: {exc}"}
        self.schema = None
        return {}


@dataclass(frozen=True, slots=True)
class Server:
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc: str


def serve_command(store_url: str, *extra: str) -> list[str]:
    """`eventbus serve` as an operator runs it, plus `BENCH_SERVE_ARGS` (for experiments: `--log-level warning`)."""
    return [
        sys.executable, "-m", "eventbus", "serve",
        "--store", store_url,
        "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--log-format", "json",
        *extra,
        *shlex.split(os.environ.get("BENCH_SERVE_ARGS", "")),
    ]  # fmt: skip


def start_servers(
    context: BenchContext, directory: Path, store: Store, *extra: str, extra_env: dict[str, str] | None = None
) -> list[Server]:
    """The store's `eventbus serve` processes, each ready (its `server_ready` line) and pinned to the server core.
    The first migrates the store before the others start. `context.processes` kills them on any failure.
    `extra_env`: variables added to their environment (`EVENTBUS_RETENTION`)."""
    count = store.choice.processes
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    servers: list[Server] = []
    for index in range(count):
        log_path = directory / ("server.log" if index == 0 else f"server-{index}.log")
        process = context.processes.start(
            serve_command(store.url, *extra), role="server", log_path=log_path, cwd=directory, extra_env=extra_env
        )
        started.append((process, log_path))
        if index == 0:  # the others start on a migrated store, together
            servers.append(_ready(context, process, log_path))
    servers.extend(_ready(context, process, log_path) for process, log_path in started[1:])
    return servers


def _ready(context: BenchContext, process: subprocess.Popen[bytes], log_path: Path) -> Server:
    ready = wait_for_log_event(process, log_path, "server_ready")
    context.pinning.apply(process.pid, "server")  # threads started before the first pass, too
    return Server(process, log_path, str(ready["grpc"]))


def stop_servers(context: BenchContext, servers: list[Server]) -> list[int]:
    """SIGTERM each (then SIGKILL after the harness's timeout); their exit statuses."""
    return [context.processes.stop(server.process) for server in servers]
