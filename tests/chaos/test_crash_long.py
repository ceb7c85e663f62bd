"""The long crash run of `make chaos` (skipped otherwise): the same harness as the short run, 200 kills per backend
by default. `CHAOS_KILLS=N` sets the kills, `CHAOS_SECONDS=S` ends the kill phase after S seconds instead (when both
are set, whichever comes first), `CHAOS_SEED` replays a schedule. On PostgreSQL the database is crashed too, once
every ten kills, on a throwaway cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.conftest import RunChaos
from tests.chaos.harness import Plan, seed_from_env
from tests.conftest import TEST_STORE, store_url
from tests.failure.cluster import Cluster

ON_POSTGRESQL = TEST_STORE in ("postgresql", "postgres")
pytestmark = [
    pytest.mark.skipif(os.environ.get("CHAOS_LONG") != "1", reason="the long crash run: `make chaos`"),
    pytest.mark.timeout(0),  # sized by CHAOS_KILLS / CHAOS_SECONDS; every wait inside is bounded
]


def long_plan(*, crash_database: bool = False) -> Plan:
    """The plan `CHAOS_KILLS` and `CHAOS_SECONDS` describe (defaults: 200 kills, no time limit)."""
    kills_text = os.environ.get("CHAOS_KILLS", "").strip()
    seconds_text = os.environ.get("CHAOS_SECONDS", "").strip()
    if kills_text and not kills_text.isdigit():
        raise pytest.UsageError(f"CHAOS_KILLS={kills_text!r}: expected a whole number of kills")
    try:
        seconds = float(seconds_text) if seconds_text else None
    except ValueError:
        raise pytest.UsageError(f"CHAOS_SECONDS={seconds_text!r}: expected a number of seconds") from None
    if seconds is not None and seconds <= 0:
        raise pytest.UsageError(f"CHAOS_SECONDS={seconds_text!r}: expected a positive number of seconds")
    kills = int(kills_text) if kills_text else (1_000_000 if seconds is not None else 200)
    # One database crash per ten kills expected (a time-limited run makes about one kill every 2 s).
    expected = kills if seconds is None else min(kills, int(seconds / 2))
    crashes = max(1, expected // 10) if crash_database else 0
    return Plan(seed_from_env(), kills=kills, seconds=seconds, database_crashes=crashes)


@pytest.mark.skipif(ON_POSTGRESQL, reason="the SQLite crash run belongs to the SQLite suite")
async def test_sqlite_long_crash_run(tmp_path: Path, chaos: RunChaos) -> None:
    summary = await chaos(long_plan(), store_url(tmp_path))
    assert summary.lost == 0 and summary.deliveries_reached == summary.deliveries_expected


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the PostgreSQL crash run: EVENTBUS_TEST_STORE=postgresql")
async def test_postgresql_long_crash_run(pg_cluster: Cluster, chaos: RunChaos) -> None:
    summary = await chaos(long_plan(crash_database=True), pg_cluster.url(schema="chaos"), pg_cluster)
    assert summary.lost == 0 and summary.deliveries_reached == summary.deliveries_expected
