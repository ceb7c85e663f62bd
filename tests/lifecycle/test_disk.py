"""Retention gives disk space back: pruned SQLite pages return to the file system in bounded steps, the WAL is cut
back, and under a steady publish-and-prune load the file stops growing; pending work and its events stay."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from eventbus.bus.service import Bus
from eventbus.clock import ManualClock
from eventbus.model import Event
from eventbus.store.base import EventQuery, StartPosition, SubscriptionSpec
from eventbus.store.sqlite import SQLiteStore
from eventbus.store.sqlite_space import WAL_TRUNCATE_ABOVE, truncate_wal
from tests.conftest import fast_settings

RETENTION = timedelta(days=1)
PAYLOAD = "x" * 2048  # bytes of data per filler event


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "disk.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def pragma(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def wal_size(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


def on_disk(path: Path) -> int:
    """Bytes of the database file once every WAL frame is in it (the WAL then has none)."""
    assert truncate_wal(path), "no reader should hold the WAL in this test"
    return path.stat().st_size


async def fill(bus: Bus, round_: int, events: int = 1000) -> None:
    for start in range(0, events, 250):
        await bus.publish(
            [
                Event.create(type="filler.blob", source="/disk", id=f"{round_}-{n}", data={"pad": PAYLOAD})
                for n in range(start, start + 250)
            ]
        )


def test_a_new_database_file_has_incremental_auto_vacuum(tmp_path: Path) -> None:
    """`auto_vacuum` only takes on an empty file: the store sets it before its first migration creates a table."""

    async def open_and_close() -> None:
        store = SQLiteStore(tmp_path / "fresh.db")
        await store.open()
        await store.close()

    asyncio.run(open_and_close())
    assert pragma(tmp_path / "fresh.db", "auto_vacuum") == 2  # INCREMENTAL
    assert pragma(tmp_path / "fresh.db", "page_count") > 0


async def test_pruned_pages_go_back_to_the_file_system_and_pending_work_stays(
    sqlite_store: SQLiteStore, clock: ManualClock
) -> None:
    bus = Bus(sqlite_store, clock=clock, settings=fast_settings(retention=RETENTION, prune_chunk=400))
    spec = SubscriptionSpec(kind="grpc", name="keeper", patterns=("keep.*",))
    keeper, _ = await sqlite_store.create_subscription(spec, start=StartPosition("latest"), now=clock.now())
    kept = await bus.publish([Event.create(type="keep.me", source="/disk", id=f"k-{n}", data={}) for n in range(3)])
    await fill(bus, 0, events=2000)
    path = sqlite_store.path
    filled = on_disk(path)
    assert filled > 4_000_000, filled  # 2000 events × 2 KiB

    clock.advance(RETENTION + timedelta(hours=1))
    await bus.run_upkeep()

    assert pragma(path, "freelist_count") == 0  # every freed page went back
    assert wal_size(path) <= WAL_TRUNCATE_ABOVE
    assert path.stat().st_size < filled / 4, (path.stat().st_size, filled)
    # Pending deliveries and the events they need outlive the retention window.
    remaining = [e.event_id for e in await sqlite_store.list_events(EventQuery(after_seq=0, limit=10_000))]
    assert remaining == [r.event_id for r in kept]
    assert (await sqlite_store.subscription_stats(keeper.id)).pending == 3


async def test_a_large_wal_is_cut_back_to_zero_by_the_upkeep(sqlite_store: SQLiteStore, clock: ManualClock) -> None:
    bus = Bus(sqlite_store, clock=clock, settings=fast_settings(retention=RETENTION))
    await fill(bus, 0, events=3000)  # ≈ 8 MB of WAL frames: the every-second PASSIVE checkpoints never shrink it
    assert wal_size(sqlite_store.path) > WAL_TRUNCATE_ABOVE
    await bus.run_upkeep()
    assert wal_size(sqlite_store.path) == 0


async def test_under_a_steady_publish_and_prune_load_the_file_stops_growing(
    sqlite_store: SQLiteStore, clock: ManualClock
) -> None:
    bus = Bus(sqlite_store, clock=clock, settings=fast_settings(retention=RETENTION, prune_chunk=400))
    sizes = []
    for round_ in range(6):
        await fill(bus, round_)
        clock.advance(RETENTION / 2)  # each round's events outlive the next round, then go
        await bus.run_upkeep()
        sizes.append(on_disk(sqlite_store.path))
    # The first rounds grow the file to its working size (two rounds of events); after that it holds steady.
    steady = max(sizes[:3])
    assert all(size <= steady * 1.1 for size in sizes[3:]), sizes
