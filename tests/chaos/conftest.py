"""Fixtures of the crash runs: `chaos(plan, store)` runs the harness, checks the outcome, prints the summary (the
seed first, so a failed run can be replayed with CHAOS_SEED), and always stops what it started; `pg_cluster` is a
throwaway PostgreSQL of the test's own (skipped, saying why, where initdb is impossible)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.chaos.harness import Harness, Incarnation, Plan
from tests.chaos.verify import Summary, check
from tests.failure.cluster import Cluster, ClusterUnavailable, make_cluster

RunChaos = Callable[..., Awaitable[Summary]]


@pytest.fixture
def chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> RunChaos:
    async def run(plan: Plan, store: str, cluster: Cluster | None = None) -> Summary:
        with capsys.disabled():
            print(f"\nchaos: seed {plan.seed} (CHAOS_SEED={plan.seed} replays it), {plan.kills} kills planned")
        harness = Harness(plan, store, tmp_path, cluster)
        started = time.monotonic()
        last: Incarnation | None = None
        try:
            last = await harness.run()
            summary = await check(harness, last, started)
        finally:
            code = await harness.close(last)
        with capsys.disabled():
            print(summary.render())
        assert code == 0, f"the last server did not stop cleanly on SIGTERM ({code}); see {harness.log_path}"
        return summary

    return run


@pytest.fixture
async def pg_cluster() -> AsyncIterator[Cluster]:
    try:
        cluster = await asyncio.to_thread(make_cluster)
    except ClusterUnavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL cluster to crash: {exc}")
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)
