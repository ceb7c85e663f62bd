"""The short crash run of `make test`: 20 SIGKILLs of `eventbus serve` under publish and delivery load on SQLite
(in the SQLite suite) and on PostgreSQL (in the PostgreSQL suite), plus PostgreSQL itself crashed a few times on a
throwaway cluster. Nothing acknowledged is lost or stored twice, every matching delivery arrives, nothing is stuck.
`make chaos` runs the long one (test_crash_long.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.conftest import RunChaos
from tests.chaos.harness import Plan, seed_from_env
from tests.chaos.verify import Summary
from tests.conftest import TEST_STORE, store_url
from tests.failure.cluster import Cluster

ON_POSTGRESQL = TEST_STORE in ("postgresql", "postgres")
pytestmark = pytest.mark.timeout(300)


def assert_survived(summary: Summary, kills: int) -> None:
    assert summary.kills >= kills, f"only {summary.kills} kills"
    assert summary.events_acked > 0 and summary.deliveries_reached == summary.deliveries_expected > 0
    assert summary.lost == 0


@pytest.mark.skipif(ON_POSTGRESQL, reason="the SQLite crash run belongs to the SQLite suite (plain `pytest`)")
async def test_sqlite_survives_twenty_sigkills(tmp_path: Path, chaos: RunChaos) -> None:
    assert_survived(await chaos(Plan(seed_from_env(), kills=20), store_url(tmp_path)), 20)


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the PostgreSQL crash run: EVENTBUS_TEST_STORE=postgresql")
async def test_postgresql_survives_twenty_sigkills(tmp_path: Path, chaos: RunChaos) -> None:
    assert_survived(await chaos(Plan(seed_from_env(), kills=20), store_url(tmp_path)), 20)


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the PostgreSQL crash run: EVENTBUS_TEST_STORE=postgresql")
async def test_postgresql_crashing_under_the_server(pg_cluster: Cluster, chaos: RunChaos) -> None:
    plan = Plan(seed_from_env(), kills=4, database_crashes=3)
    summary = await chaos(plan, pg_cluster.url(schema="chaos"), pg_cluster)
    assert_survived(summary, 4)
    assert summary.database_crashes == 3
