"""Regression tests for what the crash harness found, each pinned down without the harness's randomness."""

from __future__ import annotations

import asyncpg
import pytest

from eventbus.errors import UnavailableError
from eventbus.store.base import Store
from eventbus.store.postgres.access import PgAccess
from tests.conftest import TEST_STORE

ON_POSTGRESQL = TEST_STORE in ("postgresql", "postgres")


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the PostgreSQL store: EVENTBUS_TEST_STORE=postgresql")
async def test_a_connection_left_mid_operation_by_a_database_crash_is_unavailable_not_internal(store: Store) -> None:
    """PostgreSQL crashing under a publish left asyncpg's protocol mid-operation; the pool's reset on release then
    raised InternalClientError, which reached the gRPC layer as INTERNAL instead of UNAVAILABLE (a retryable 503)."""
    assert isinstance(store, PgAccess)
    with pytest.raises(UnavailableError, match="another operation"):
        async with store._tx():
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
