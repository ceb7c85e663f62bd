"""The scrape-time store queries: on SQLite each starts from the subscriptions and searches the deliveries by
subscription (never a scan of the whole table, whose succeeded history grows without bound); on every backend
an empty store answers zeros."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from eventbus.errors import UnavailableError
from eventbus.store import sqlite_metrics
from eventbus.store.base import Store
from eventbus.store.metrics_queries import metrics_queries_of
from eventbus.store.sqlite import SQLiteStore
from tests.conftest import TEST_STORE


async def test_an_empty_store_counts_nothing(store: Store) -> None:
    counts = await metrics_queries_of(store).store_counts(now=datetime.now(UTC))
    assert counts.subscriptions == ()
    assert counts.dead == {}
    assert counts.oldest_received_at is None


@pytest.mark.skipif(TEST_STORE != "sqlite", reason="SQLite query plans")
@pytest.mark.parametrize("name", ["STATES_SQL", "DUE_SQL", "DEAD_SQL"])
async def test_sqlite_plans_search_deliveries_by_subscription(store: Store, name: str) -> None:
    assert isinstance(store, SQLiteStore)
    sql: str = getattr(sqlite_metrics, name)
    with sqlite3.connect(store.path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (0,) if "?" in sql else ())]
    [deliveries] = [step for step in plan if step.startswith(("SCAN d", "SEARCH d"))]
    assert deliveries.startswith("SEARCH d USING") and "(subscription_id=?" in deliveries, plan
    assert any(step.startswith("SCAN s") for step in plan), plan


def test_unknown_stores_are_refused() -> None:
    with pytest.raises(UnavailableError, match="keeps no metrics queries"):
        metrics_queries_of(object())
