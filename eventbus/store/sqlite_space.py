"""SQLite space: free pages go back to the file system in small steps, and the WAL is cut back after checkpoints.

`auto_vacuum = INCREMENTAL` (set before the first table) keeps freed pages on a free list instead of shrinking
the file on every commit; `PRAGMA incremental_vacuum(N)` then moves N of them to the end of the file and
truncates it. Each step is one write operation of the group-committing writer, so a publish waits for at most one
step (`VACUUM_STEP_PAGES` pages), never for a whole round.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

log = structlog.get_logger("eventbus.store")

VACUUM_STEP_PAGES = 256  # 1 MiB of 4 KiB pages per writer operation
CHECKPOINT_BUSY_MS = 1000  # how long a TRUNCATE checkpoint waits for readers and the writer before giving up
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps after a checkpoint resets it
WAL_TRUNCATE_ABOVE = 4 * 1024 * 1024  # bytes of WAL beyond which the upkeep checkpoints it with TRUNCATE


def free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def vacuum_step(conn: sqlite3.Connection, pages: int) -> tuple[int, int]:
    """Inside the writer's transaction: return up to `pages` free pages; (returned, free pages left).

    One page per statement: `PRAGMA incremental_vacuum(N)` yields a row per page it frees, and Python's sqlite3
    module, seeing a statement without columns, stops it after the first (so `incremental_vacuum(1000)` frees
    one page from Python). Statements are cheap inside one transaction; the commit is what costs.
    """
    before = free_pages(conn)
    for _ in range(min(pages, before)):
        conn.execute("PRAGMA incremental_vacuum(1)")
    after = free_pages(conn)
    return before - after, after


def truncate_wal(path: Path, *, above: int = 0) -> bool:
    """Checkpoint every WAL frame into the database and cut the WAL file to zero bytes, on a connection of its
    own (a checkpoint cannot run inside the writer's transaction), when the WAL holds more than `above` bytes.
    Gives up, returning False, when a reader or the writer holds on longer than `CHECKPOINT_BUSY_MS`: the next
    round tries again. While it runs, writes wait (it holds the write lock): hence `above`, so a small WAL, which
    the every-second PASSIVE checkpoints keep reusing, costs the writers nothing."""
    try:
        if Path(f"{path}-wal").stat().st_size <= above:
            return True
    except FileNotFoundError:
        return True
    conn = sqlite3.connect(path, isolation_level=None, timeout=CHECKPOINT_BUSY_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0
    except sqlite3.Error as exc:
        log.warning("store_checkpoint_failed", mode="truncate", error=str(exc))
        return False
    finally:
        conn.close()
