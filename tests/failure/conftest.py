"""Fixtures of the failure tests: a throwaway PostgreSQL cluster per test (skipped, with the reason, where one
cannot be made), and webhook receivers closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.failure.cluster import Cluster, ClusterUnavailable, make_cluster
from tests.failure.receiver import HookReceiver


@pytest.fixture
async def pg_cluster() -> AsyncIterator[Cluster]:
    """A fresh cluster of this test's own, started; stopped and removed afterwards whatever the test did to it."""
    try:
        cluster = await asyncio.to_thread(make_cluster)
    except ClusterUnavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)


@pytest.fixture
async def hook_receivers() -> AsyncIterator[list[HookReceiver]]:
    """Receivers a test started go here; closed at the end (held requests answered, the server stopped)."""
    started: list[HookReceiver] = []
    yield started
    for receiver in started:
        await receiver.close()
